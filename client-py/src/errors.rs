//! The exception hierarchy, mirroring `lockserver_client::Error`, and the one mapping into it.

use lockserver_client::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

create_exception!(
    lockserver_client,
    LockserverError,
    PyException,
    "Base of every lockserver error. `.code` is the stable error code (`locked`, `not_held`, ...)."
);
create_exception!(
    lockserver_client,
    LockHeld,
    LockserverError,
    "Another owner holds the lock. `.owner` names it (`.holders` all of them); `.expires_in` is its time left in seconds or None."
);
create_exception!(
    lockserver_client,
    LimitMismatch,
    LockserverError,
    "The semaphore has another limit (or the resource is a lock, not a semaphore). `.limit` is its limit now, or None."
);
create_exception!(
    lockserver_client,
    LockLost,
    LockserverError,
    "The lock was lost before it was released: it expired or was taken over."
);
create_exception!(
    lockserver_client,
    NotHeld,
    LockLost,
    "Nobody holds the lock (never acquired, released, or expired)."
);
create_exception!(
    lockserver_client,
    NotOwner,
    LockserverError,
    "Another owner or a newer fencing token holds the lock."
);
create_exception!(
    lockserver_client,
    NoSuchLease,
    LockserverError,
    "The lease was never granted, was revoked, or expired."
);
create_exception!(
    lockserver_client,
    Unauthorized,
    LockserverError,
    "The server refused the secret (LOCKSERVER_SECRET)."
);
create_exception!(
    lockserver_client,
    Forbidden,
    LockserverError,
    "The key's role does not allow this, or it named another namespace."
);
create_exception!(
    lockserver_client,
    RateLimited,
    LockserverError,
    "The key's request rate is used up. `.retry_after` is seconds to wait, or None."
);
create_exception!(
    lockserver_client,
    QuotaExceeded,
    LockserverError,
    "The key's namespace holds its quota of locks (max_locks)."
);
create_exception!(
    lockserver_client,
    Unavailable,
    LockserverError,
    "The server cannot be reached or is unavailable."
);
create_exception!(
    lockserver_client,
    BadRequest,
    LockserverError,
    "The server refused the request as malformed."
);

/// Turns a client error into its exception, carrying the server's message and the code.
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    let exception = match &error {
        Error::Locked { .. } => LockHeld::new_err(message),
        Error::LimitMismatch { .. } => LimitMismatch::new_err(message),
        Error::LockLost => LockLost::new_err(message),
        Error::NotHeld => NotHeld::new_err(message),
        Error::NotOwner => NotOwner::new_err(message),
        Error::NoSuchLease => NoSuchLease::new_err(message),
        Error::Unauthorized => Unauthorized::new_err(message),
        Error::Forbidden(_) => Forbidden::new_err(message),
        Error::RateLimited { .. } => RateLimited::new_err(message),
        Error::QuotaExceeded(_) => QuotaExceeded::new_err(message),
        Error::Unavailable(_) => Unavailable::new_err(message),
        Error::BadRequest(_) => BadRequest::new_err(message),
        // An argument out of range, found before sending: a `BadRequest` that is also a
        // `ValueError`, Python's own convention.
        Error::InvalidArgument(_) => Python::attach(|py| match INVALID_ARGUMENT.get(py) {
            Some(class) => PyErr::from_type(class.bind(py).clone(), message),
            None => PyValueError::new_err(message),
        }),
        _ => LockserverError::new_err(message),
    };
    Python::attach(|py| {
        let value = exception.value(py);
        let _ = value.setattr("code", error.code());
        if let Error::Locked { owner, expires_in, holders } = &error {
            let _ = value.setattr("owner", owner);
            let _ = value.setattr("expires_in", expires_in.map(|left| left.as_secs_f64()));
            let _ = value.setattr("holders", holders.clone());
        }
        if let Error::LimitMismatch { limit, .. } = &error {
            let _ = value.setattr("limit", *limit);
        }
        if let Error::RateLimited { retry_after, .. } = &error {
            let _ = value.setattr("retry_after", retry_after.map(|wait| wait.as_secs_f64()));
        }
    });
    exception
}

/// Adds the exception classes to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("LockserverError", py.get_type::<LockserverError>())?;
    module.add("LockHeld", py.get_type::<LockHeld>())?;
    module.add("LimitMismatch", py.get_type::<LimitMismatch>())?;
    module.add("LockLost", py.get_type::<LockLost>())?;
    module.add("NotHeld", py.get_type::<NotHeld>())?;
    module.add("NotOwner", py.get_type::<NotOwner>())?;
    module.add("NoSuchLease", py.get_type::<NoSuchLease>())?;
    module.add("Unauthorized", py.get_type::<Unauthorized>())?;
    module.add("Forbidden", py.get_type::<Forbidden>())?;
    module.add("RateLimited", py.get_type::<RateLimited>())?;
    module.add("QuotaExceeded", py.get_type::<QuotaExceeded>())?;
    module.add("Unavailable", py.get_type::<Unavailable>())?;
    module.add("BadRequest", py.get_type::<BadRequest>())?;
    let bases = PyTuple::new(py, [py.get_type::<BadRequest>(), py.get_type::<PyValueError>()])?;
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "lockserver_client")?;
    namespace.set_item("__doc__", "An argument refused before sending (a BadRequest and a ValueError).")?;
    let class =
        py.get_type::<PyType>().call1(("InvalidArgument", bases, namespace))?.cast_into::<PyType>()?;
    module.add("InvalidArgument", &class)?;
    let _ = INVALID_ARGUMENT.set(py, class.unbind());
    Ok(())
}

/// `InvalidArgument(BadRequest, ValueError)`, made when the module is loaded.
static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
