//! The `jwt` authenticator (SPEC §5). Being implemented under issue #3; until then a config
//! that declares one is refused at load time with a clear error.

use std::sync::Arc;

use serde_saphyr::Location;

use super::Identity;
use super::source::Source;
use crate::config::compile::{ConsumerEntry, Diagnostics};
use crate::config::file::AuthenticatorFile;
use crate::pipeline::refusal::Refusal;
use crate::reason::Reason;
use crate::secret::Secret;

#[derive(Debug)]
pub struct JwtAuth {
    name: Arc<str>,
    sources: Vec<Source>,
}

impl JwtAuth {
    pub fn compile(
        _name: &Arc<str>,
        _file: &AuthenticatorFile,
        at: &Location,
        path: &str,
        _consumers: &[ConsumerEntry<'_>],
        d: &mut Diagnostics,
    ) -> Option<JwtAuth> {
        d.error(
            Some(at),
            path,
            "jwt authenticators are not available in this build yet",
        );
        None
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub async fn verify(&self, _token: &Secret<String>) -> Result<Identity, Refusal> {
        Err(Refusal::new(Reason::JwtMalformed, "unavailable"))
    }

    pub fn header_names(&self) -> Vec<String> {
        Vec::new()
    }

    pub fn is_ready(&self) -> bool {
        true
    }
}
