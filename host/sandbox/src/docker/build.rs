//! Building the agent image on the Docker engine, unless an image of the
//! same content is there already.

use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;

use crate::backend::SandboxError;
use crate::docker::Docker;
use crate::image::AgentImage;

impl AgentImage {
    /// Builds the image unless an image with this content's tag exists.
    /// `progress` receives the engine's build output, line by line.
    pub async fn build(
        &self,
        docker: &Docker,
        mut progress: impl FnMut(&str),
    ) -> Result<String, SandboxError> {
        let context = self.context()?;
        let tag = Self::tag_for(&context);
        if docker.inner.inspect_image(&tag).await.is_ok() {
            progress(&format!("{tag} is up to date"));
            return Ok(tag);
        }
        let mut stream = docker.inner.build_image(
            BuildImageOptions {
                t: Some(tag.clone()),
                rm: true,
                forcerm: true,
                ..BuildImageOptions::default()
            },
            None,
            Some(bollard::body_full(context.into())),
        );
        while let Some(step) = stream.next().await {
            let info =
                step.map_err(|e| SandboxError::Image(format!("the engine's build failed: {e}")))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(SandboxError::Image(format!("the build failed: {error}")));
            }
            if let Some(line) = info.stream {
                let line = line.trim_end();
                if !line.is_empty() {
                    progress(line);
                }
            }
        }
        docker
            .inner
            .inspect_image(&tag)
            .await
            .map_err(|e| SandboxError::Image(format!("{tag} is missing after the build: {e}")))?;
        Ok(tag)
    }
}
