//! The Modal client's error: what kind of failure it was (so that callers
//! tell a refused token from a busy server or a gone sandbox), the gRPC
//! code when there was an answer, and a message that names the call and
//! never a secret (built through a [`Redactor`]).

use tonic::Code;

use crate::http::Redactor;

/// What went wrong, as far as a caller decides anything by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModalErrorKind {
    /// `UNAUTHENTICATED`, `PERMISSION_DENIED`.
    Auth,
    /// `NOT_FOUND`: the object is not there (a finished task's exec, too).
    NotFound,
    /// The sandbox has finished: terminated, or past its timeout.
    SandboxGone,
    /// `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// `UNAVAILABLE` and the other codes the official client retries
    /// (`DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `CANCELLED`), and
    /// connections that failed or broke.
    Transient,
    /// Another refusal (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, …).
    Rejected,
    /// An answer that does not read as Modal's.
    Protocol,
}

/// A failed Modal call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModalError {
    pub kind: ModalErrorKind,
    /// The gRPC code of the answer, when there was one.
    pub code: Option<Code>,
    /// Redacted: it may be logged and shown.
    pub message: String,
}

impl ModalError {
    pub fn new(kind: ModalErrorKind, message: impl Into<String>) -> Self {
        ModalError {
            kind,
            code: None,
            message: message.into(),
        }
    }

    pub fn is(&self, kind: ModalErrorKind) -> bool {
        self.kind == kind
    }

    /// Worth another attempt of the same call.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ModalErrorKind::Transient | ModalErrorKind::RateLimited
        )
    }

    /// The status `label` (`ModalClient/SandboxCreateV2`) ended with; an
    /// auth refusal names the token variables (`token_vars`).
    pub fn status(
        label: &str,
        status: &tonic::Status,
        token_vars: &str,
        redactor: &Redactor,
    ) -> Self {
        let code = status.code();
        let kind = kind_of(code);
        let text = status.message().trim();
        let mut message = if text.is_empty() {
            format!("Modal {label}: {}", describe(code))
        } else {
            format!("Modal {label}: {}: {text}", describe(code))
        };
        if kind == ModalErrorKind::Auth {
            message.push_str(&format!(
                " (hint: check the Modal token in {token_vars}; `modal token new` makes one)"
            ));
        }
        ModalError {
            kind,
            code: Some(code),
            message: redactor.text(message),
        }
    }

    /// An answer that does not read as Modal's.
    pub fn protocol(label: &str, why: impl std::fmt::Display, redactor: &Redactor) -> Self {
        ModalError::new(
            ModalErrorKind::Protocol,
            redactor.text(format!("Modal {label}: unexpected answer: {why}")),
        )
    }
}

/// The kind of a gRPC code.
pub fn kind_of(code: Code) -> ModalErrorKind {
    match code {
        Code::Unauthenticated | Code::PermissionDenied => ModalErrorKind::Auth,
        Code::NotFound => ModalErrorKind::NotFound,
        Code::ResourceExhausted => ModalErrorKind::RateLimited,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => ModalErrorKind::Transient,
        _ => ModalErrorKind::Rejected,
    }
}

/// `UNAVAILABLE`, as the gRPC documentation spells codes.
fn describe(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_their_kind_without_secrets() {
        let r = Redactor::new(["as-secret-0123456789".to_owned()]);
        let vars = "`MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`";
        let refused = ModalError::status(
            "ModalClient/AppGetOrCreate",
            &tonic::Status::unauthenticated("bad token as-secret-0123456789"),
            vars,
            &r,
        );
        assert_eq!(refused.kind, ModalErrorKind::Auth);
        assert_eq!(
            refused.message,
            "Modal ModalClient/AppGetOrCreate: UNAUTHENTICATED: bad token (sensitive) \
             (hint: check the Modal token in `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`; \
             `modal token new` makes one)"
        );
        let busy = ModalError::status("x", &tonic::Status::unavailable(""), vars, &r);
        assert_eq!(
            (busy.kind, busy.message.as_str()),
            (ModalErrorKind::Transient, "Modal x: UNAVAILABLE")
        );
        assert!(busy.is_transient());
        let limited = ModalError::status("x", &tonic::Status::resource_exhausted("slow"), vars, &r);
        assert!(limited.is_transient());
        assert_eq!(kind_of(Code::NotFound), ModalErrorKind::NotFound);
        assert_eq!(kind_of(Code::FailedPrecondition), ModalErrorKind::Rejected);
        assert!(
            !ModalError::status("x", &tonic::Status::not_found("gone"), vars, &r).is_transient()
        );
    }
}
