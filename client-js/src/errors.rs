//! Client errors as JavaScript errors: instances of the package's `LockserverError` class
//! (which `index.js` registers at load), with `code` (`LOCKED`, `NOT_HELD`, ...) and, for
//! `LOCKED`, `owner` and `expiresInMs` as real properties. And the one helper that turns a
//! client future into a promise rejecting with such errors.

use std::cell::Cell;
use std::future::Future;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// What the `LockserverError` constructor receives.
#[napi(object)]
pub struct ErrorFields {
    /// The error code, upper case: `LOCKED`, `NOT_HELD`, `NOT_OWNER`, `NO_SUCH_LEASE`,
    /// `LIMIT_MISMATCH`, `LOCK_LOST`, `UNAUTHORIZED`, `FORBIDDEN`, `RATE_LIMITED`, `QUOTA_EXCEEDED`,
    /// `BAD_REQUEST`, `UNAVAILABLE` or `SERVER`.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// `LOCKED`: the current holder.
    pub owner: Option<String>,
    /// `LOCKED`: milliseconds left on the current hold; null without expiry.
    pub expires_in_ms: Option<f64>,
    /// `RATE_LIMITED`: milliseconds until the server accepts a request again (`Retry-After`).
    pub retry_after_ms: Option<f64>,
    /// `LOCKED`: every current holder (a semaphore's, or a read-write lock's readers).
    pub holders: Option<Vec<String>>,
    /// `LIMIT_MISMATCH`: the semaphore's limit now; null when the resource is a lock.
    pub limit: Option<u32>,
}

thread_local! {
    /// The `LockserverError` class of this JavaScript thread's package instance. Leaked on
    /// purpose (one reference per thread that loads the package): dropping it in a thread-local
    /// destructor could run after the JavaScript environment is gone.
    static ERROR_CLASS: Cell<Option<&'static FunctionRef<ErrorFields, ()>>> = const { Cell::new(None) };
}

/// Registers the class every error is made an instance of (called once by `index.js`).
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JavaScript only
pub fn register_error_class(error_class: Function<ErrorFields, ()>) -> Result<()> {
    let reference: &'static _ = Box::leak(Box::new(error_class.create_ref()?));
    ERROR_CLASS.with(|class| class.set(Some(reference)));
    Ok(())
}

/// A client error as a `LockserverError` (a plain `Error` if no class was registered).
pub fn to_js(env: &Env, error: lockserver_client::Error) -> Error {
    let message = error.to_string();
    let (owner, expires_in_ms, holders) = match &error {
        lockserver_client::Error::Locked { owner, expires_in, holders } => {
            (Some(owner.clone()), expires_in.map(|left| left.as_millis() as f64), Some(holders.clone()))
        }
        _ => (None, None, None),
    };
    let limit = match &error {
        lockserver_client::Error::LimitMismatch { limit, .. } => *limit,
        _ => None,
    };
    let retry_after_ms = match &error {
        lockserver_client::Error::RateLimited { retry_after, .. } => {
            retry_after.map(|wait| wait.as_millis() as f64)
        }
        _ => None,
    };
    let fields = ErrorFields {
        code: error.code().to_uppercase(),
        message: message.clone(),
        owner,
        expires_in_ms,
        retry_after_ms,
        holders,
        limit,
    };
    let made = ERROR_CLASS.with(Cell::get).map(|class| -> Result<Error> {
        let instance = class.borrow_back(env)?.new_instance(fields)?;
        Ok(Error::from(instance))
    });
    match made {
        Some(Ok(error)) => error,
        _ => Error::new(Status::GenericFailure, message),
    }
}

/// A promise of what `future` resolves to, converted by `convert`; rejected with a
/// `LockserverError` when it fails.
pub fn promise<'env, T, V>(
    env: &'env Env,
    future: impl Future<Output = lockserver_client::Result<T>> + Send + 'static,
    convert: impl FnOnce(T) -> V + 'static,
) -> Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
{
    env.spawn_future_with_callback(async move { Ok(future.await) }, move |env, outcome| match outcome {
        Ok(value) => Ok(convert(value)),
        Err(error) => Err(to_js(env, error)),
    })
}

#[cfg(test)]
mod tests {
    /// The codes `header.d.ts` declares are exactly the client's, upper case.
    #[test]
    fn the_declared_codes_are_the_clients() {
        let header = include_str!("../header.d.ts");
        let start = header.find("export type LockserverErrorCode =").expect("the code type is declared");
        let end = start + header[start..].find("\n\n").expect("the declaration ends");
        let mut declared: Vec<String> =
            header[start..end].split('\'').skip(1).step_by(2).map(str::to_string).collect();
        let mut codes: Vec<String> =
            lockserver_client::Error::CODES.iter().map(|code| code.to_uppercase()).collect();
        declared.sort();
        codes.sort();
        assert_eq!(declared, codes);
    }
}
