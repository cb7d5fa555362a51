//! The broker's mailbox over the channels' router: how an agent's
//! `corral/next` and `corral/reply` reach the people who wrote to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_broker::{Inbound, Mailbox, NotDelivered};
use corral_channels::{Message, Router, Sender};

/// The router, as the broker's [`Mailbox`].
pub(crate) struct RouterMailbox(pub Arc<Router>);

/// How long a reply's delivery may take before it is recorded as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn inbound(m: Message) -> Inbound {
    Inbound {
        id: m.id,
        text: m.text,
        user: m.origin.sender.person().map(str::to_string),
        schedule: match &m.origin.sender {
            Sender::Schedule(run) => Some(run.name.clone()),
            Sender::Person { .. } => None,
        },
        channel: m.origin.channel,
        chat_workspace: m.origin.chat_workspace,
        conversation: m.origin.conversation,
    }
}

impl Mailbox for RouterMailbox {
    fn next<'a>(
        &'a self,
        agent: &'a str,
        holder: &'a str,
        wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<Inbound>> + Send + 'a>> {
        Box::pin(async move { self.0.next(agent, holder, wait).await.map(inbound) })
    }

    fn release(&self, agent: &str, holder: &str) {
        self.0.release(agent, holder);
    }

    fn pending(&self, agent: &str, id: u64) -> Option<Inbound> {
        self.0.pending(agent, id).map(inbound)
    }

    fn working_on(&self, agent: &str) -> Option<Inbound> {
        self.0.held_only(agent).map(inbound)
    }

    fn reply<'a>(
        &'a self,
        agent: &'a str,
        id: u64,
        text: String,
        last: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotDelivered>> + Send + 'a>> {
        let handed = self.0.reply(agent, id, text, last);
        Box::pin(async move {
            let receipt = handed.map_err(|e| NotDelivered(e.0))?;
            match tokio::time::timeout(DELIVERY_TIMEOUT, receipt).await {
                Ok(Ok(outcome)) => outcome.map_err(|e| NotDelivered(e.0)),
                Ok(Err(_)) => Err(NotDelivered(
                    "the channel dropped the reply without delivering it".into(),
                )),
                Err(_) => Err(NotDelivered(format!(
                    "the channel did not confirm delivery within {DELIVERY_TIMEOUT:?}"
                ))),
            }
        })
    }
}
