//! The Tokio runtime the bindings run on, and asyncio awaitables of client calls that never
//! touch Python from Tokio's threads.
//!
//! Why not `pyo3_async_runtimes::future_into_py`: it sets each result from a Tokio thread that
//! takes the GIL, and when that races the interpreter's exit the thread is killed mid-call
//! (a segfault or an abort at exit; PyO3/pyo3-async-runtimes#40). Here a finished call only
//! queues its result and writes a byte to a pipe; the event loop, which watches the pipe
//! (`loop.add_reader`), sets the results on its own thread. Tokio's threads hold no Python
//! object they would have to drop with the GIL (PyO3 defers such drops to its reference pool).

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use lockserver_client::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use pyo3::IntoPyObjectExt;

use crate::errors;

/// The runtime every call runs on: blocking calls wait on it with the GIL released.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("lockserver-client")
            .build()
            .expect("a Tokio runtime")
    })
}

/// Makes a finished call's Python value, on the event loop's thread.
type Finish = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What a loop's waker and the calls made on that loop share.
struct Completions {
    /// Finished calls: the asyncio future to resolve, and how to make its value.
    done: Mutex<Vec<(Py<PyAny>, Finish)>>,
    /// Written (one byte per finished call, without the GIL) to wake the loop.
    wake: UnixStream,
}

/// One per event loop: the read end of its pipe, watched by the loop.
#[pyclass(frozen)]
struct LoopWaker {
    completions: Arc<Completions>,
    read: UnixStream,
}

#[pymethods]
impl LoopWaker {
    /// Called by the loop when the pipe is readable: resolves every finished call's future.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut bytes = [0u8; 256];
        while matches!((&self.read).read(&mut bytes), Ok(n) if n > 0) {}
        let done = std::mem::take(&mut *self.completions.done.lock().unwrap_or_else(PoisonError::into_inner));
        for (future, finish) in done {
            let future = future.bind(py);
            if future.call_method0("done")?.is_truthy()? {
                continue; // cancelled meanwhile
            }
            match finish(py) {
                Ok(value) => future.call_method1("set_result", (value,))?,
                Err(error) => future.call_method1("set_exception", (error.into_value(py),))?,
            };
        }
        Ok(())
    }
}

/// The waker of `event_loop`, made and registered with it on first use.
fn waker<'py>(py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, LoopWaker>> {
    static WAKERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let wakers = WAKERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("weakref")?.call_method0("WeakKeyDictionary")?.unbind())
        })?
        .bind(py);
    if let Ok(waker) = wakers.call_method1("get", (event_loop,))?.cast_into::<LoopWaker>() {
        return Ok(waker);
    }
    let (read, wake) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    wake.set_nonblocking(true)?;
    let fd = read.as_raw_fd();
    let completions = Arc::new(Completions { done: Mutex::default(), wake });
    let waker = Bound::new(py, LoopWaker { completions, read })?;
    event_loop.call_method1("add_reader", (fd, waker.getattr("drain")?))?;
    wakers.set_item(event_loop, &waker)?;
    Ok(waker)
}

/// An asyncio awaitable of `call` on the running loop. Cancelling it (the asyncio task) drops
/// the call.
pub fn awaitable<'py, F, T>(py: Python<'py>, call: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let completions = waker(py, &event_loop)?.get().completions.clone();
    let future = event_loop.call_method0("create_future")?;
    let resolved = future.clone().unbind();
    let task = runtime().spawn(async move {
        let outcome = call.await;
        let finish: Finish = Box::new(move |py| match outcome {
            Ok(value) => value.into_py_any(py),
            Err(error) => Err(errors::to_py(error)),
        });
        completions.done.lock().unwrap_or_else(PoisonError::into_inner).push((resolved, finish));
        let _ = (&completions.wake).write(&[1]); // a full pipe already means "wake up"
    });
    let abort = task.abort_handle();
    let cancel = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
        if args.get_item(0)?.call_method0("cancelled")?.is_truthy()? {
            abort.abort();
        }
        Ok(())
    })?;
    future.call_method1("add_done_callback", (cancel,))?;
    Ok(future)
}
