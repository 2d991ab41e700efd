//! Errors that say what went wrong in words and carry the NTSTATUS when there is one.

use std::fmt;
use std::time::Duration;

use netdirect::Request;
use netdirect_types::Status;

/// A failure of an `nd` command: a sentence, and the provider's status when one was involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, in words.
    pub message: String,
    /// The NTSTATUS behind it, if any.
    pub status: Option<Status>,
}

impl Error {
    /// An error with a status.
    pub fn status(message: impl Into<String>, status: Status) -> Error {
        Error {
            message: message.into(),
            status: Some(status),
        }
    }

    /// An error without a status (a usage or a data error).
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            status: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{}: {s}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The result type of the CLI.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds words to a provider status.
pub trait Context<T> {
    /// Wraps an `Err(status)` as an [`Error`] with the message `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, Status> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|s| Error::status(what(), s))
    }
}

/// Waits for a provider request for at most `timeout`; a request still pending then is an
/// `STATUS_IO_TIMEOUT` error.
pub fn wait<T: Send + 'static>(request: Request<T>, timeout: Duration, what: &str) -> Result<T> {
    match request.wait_timeout(timeout) {
        Ok(v) => Ok(v),
        Err(netdirect::WaitError::Failed(s)) => Err(Error::status(what.to_string(), s)),
        Err(netdirect::WaitError::TimedOut(_)) => Err(Error::status(
            format!("{what}: no answer within {} s", timeout.as_secs_f64()),
            Status::IO_TIMEOUT,
        )),
    }
}

/// Words for the statuses users meet most, to put in front of the status itself.
pub fn explain(status: Status) -> &'static str {
    match status {
        Status::CONNECTION_REFUSED => {
            "the connection was refused: no server there, or the peer rejected it"
        }
        Status::SHARING_VIOLATION | Status::ADDRESS_ALREADY_EXISTS => "the port is in use",
        Status::INVALID_ADDRESS => "the address is not usable here",
        Status::IO_TIMEOUT => "timed out",
        Status::HOST_UNREACHABLE | Status::NETWORK_UNREACHABLE => "the peer is unreachable",
        Status::CONNECTION_ABORTED | Status::CONNECTION_RESET => "the connection was lost",
        Status::CANCELLED => "the request was cancelled (the connection went down)",
        _ => "the operation failed",
    }
}
