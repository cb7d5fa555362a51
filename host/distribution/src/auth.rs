//! Registry credentials, read as other OCI tools read them: the Docker
//! config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`),
//! with its credential helpers.

use oci_client::secrets::RegistryAuth;

/// The credentials for `registry`, or anonymous access when there are none.
pub(crate) fn credentials(registry: &str) -> RegistryAuth {
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
            tracing::warn!(
                registry,
                "the Docker config holds an identity token for this registry, which Corral does not use; trying anonymous access"
            );
            RegistryAuth::Anonymous
        }
        Err(e) => {
            tracing::debug!(registry, "no registry credentials ({e}); anonymous access");
            RegistryAuth::Anonymous
        }
    }
}
