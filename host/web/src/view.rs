//! What the dashboard shows of the policy set in force, without linking
//! Cedar: the host gives it through [`PolicyView`].

/// One policy as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct PolicyText {
    /// Its `@id`.
    pub id: String,
    /// `file:line` where it was written.
    pub location: String,
    /// Its source text.
    pub text: String,
    /// Whether it is a `@shadow` policy (recorded, never enforced).
    pub shadow: bool,
}

/// The policy set in force, as the host loaded it.
pub trait PolicyView: Send + Sync {
    /// The set's hash, as records carry it.
    fn hash(&self) -> String;
    /// Every policy, enforced and shadow, in id order.
    fn policies(&self) -> Vec<PolicyText>;
}
