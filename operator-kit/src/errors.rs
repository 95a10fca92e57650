//! Error classification on top of kube's `Status` helpers: decides what a
//! reconciler does with a failed API call.
use kube::Error;

/// What kind of failure an API error is, from the caller's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 409 reason Conflict: written from a stale resourceVersion (or an apply conflict).
    Conflict,
    /// 404: the object is gone.
    NotFound,
    /// 409 reason AlreadyExists: a create raced another create.
    AlreadyExists,
    /// 410: a watch or list resourceVersion is too old.
    Gone,
    /// 422 (or 400 BadRequest): the request itself is wrong; retrying will not help.
    Invalid,
    /// 401/403: missing RBAC.
    Forbidden,
    /// 429, 5xx, timeouts, connection errors: retry later.
    Transient,
    /// Anything else (serialization, configuration).
    Other,
}

impl ErrorClass {
    /// Stable label value for metrics and event reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Conflict => "conflict",
            ErrorClass::NotFound => "not_found",
            ErrorClass::AlreadyExists => "already_exists",
            ErrorClass::Gone => "gone",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Transient => "transient",
            ErrorClass::Other => "other",
        }
    }
}

/// Classifies a kube error. Conflict and AlreadyExists share HTTP 409 and are
/// told apart by `reason`, never by the code alone.
pub fn classify(err: &Error) -> ErrorClass {
    match err {
        Error::Api(status) => {
            if status.is_already_exists() {
                ErrorClass::AlreadyExists
            } else if status.is_conflict() {
                ErrorClass::Conflict
            } else if status.is_not_found() {
                ErrorClass::NotFound
            } else if status.reason == "Expired" || status.code == 410 {
                ErrorClass::Gone
            } else if status.is_invalid() || status.code == 400 {
                ErrorClass::Invalid
            } else if status.is_forbidden() || status.code == 401 {
                ErrorClass::Forbidden
            } else if status.code == 429 || status.code >= 500 {
                ErrorClass::Transient
            } else {
                ErrorClass::Other
            }
        }
        Error::HyperError(_) | Error::Service(_) | Error::ReadEvents(_) => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

/// The result of a request for which NotFound means the work is done: the delete of what
/// is gone already, the patch of what went meanwhile. One way to say it, instead of a
/// match on the status at every call.
pub trait NotFoundIsDone<T> {
    /// `Some` with the response, `None` when the object was not found, or the error.
    fn ok_if_not_found(self) -> Result<Option<T>, Error>;
}

impl<T> NotFoundIsDone<T> for Result<T, Error> {
    fn ok_if_not_found(self) -> Result<Option<T>, Error> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if classify(&e) == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> Error {
        Error::Api(Status::failure("msg", reason).with_code(code).boxed())
    }

    #[test]
    fn conflict_and_already_exists_are_told_apart_by_reason() {
        assert_eq!(classify(&api(409, "Conflict")), ErrorClass::Conflict);
        assert_eq!(
            classify(&api(409, "AlreadyExists")),
            ErrorClass::AlreadyExists
        );
    }

    #[test]
    fn not_found_is_done_and_every_other_error_is_not() {
        assert_eq!(Ok::<_, Error>(1).ok_if_not_found().unwrap(), Some(1));
        let gone: Result<i32, Error> = Err(api(404, "NotFound"));
        assert_eq!(gone.ok_if_not_found().unwrap(), None);
        let refused: Result<i32, Error> = Err(api(403, "Forbidden"));
        assert!(refused.ok_if_not_found().is_err());
    }

    #[test]
    fn classes_of_common_statuses() {
        assert_eq!(classify(&api(404, "NotFound")), ErrorClass::NotFound);
        assert_eq!(classify(&api(410, "Expired")), ErrorClass::Gone);
        assert_eq!(classify(&api(422, "Invalid")), ErrorClass::Invalid);
        assert_eq!(classify(&api(403, "Forbidden")), ErrorClass::Forbidden);
        assert_eq!(
            classify(&api(429, "TooManyRequests")),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(&api(503, "ServiceUnavailable")),
            ErrorClass::Transient
        );
        assert_eq!(classify(&api(500, "InternalError")), ErrorClass::Transient);
    }
}
