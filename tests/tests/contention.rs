//! Many clients at once: mutual exclusion and fencing under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockserver_tests::{Api, TestServer};
use serde_json::json;

/// One resource as the clients see it.
#[derive(Default)]
struct Book {
    /// Who holds it now.
    holder: Option<usize>,
    /// The fencing tokens of its grants, in grant order.
    tokens: Vec<u64>,
}

/// 1,000 concurrent clients on 10 resources: never two holders at once, and the fencing tokens
/// of each resource's grants strictly increase in grant order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_clients_never_share_a_lock() {
    let server = TestServer::start(&[]);
    const CLIENTS: usize = 1000;
    const RESOURCES: usize = 10;
    let books: Arc<Vec<Mutex<Book>>> = Arc::new((0..RESOURCES).map(|_| Mutex::default()).collect());
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        // Separate clients: each has its own connection pool.
        let api = Api::new(&server.base, &server.secret);
        let books = books.clone();
        tasks.push(tokio::spawn(async move {
            let resource = client % RESOURCES;
            let name = format!("shared-{resource}");
            let owner = format!("client-{client}");
            let grant =
                api.acquire(json!({"resource": name, "owner": owner, "wait": 60, "expire": 60})).await;
            assert_eq!(grant.status, 200, "{:?}", grant.body);
            let token = grant.token();
            {
                let mut book = books[resource].lock().unwrap();
                assert_eq!(
                    book.holder, None,
                    "client {client} was granted {name} while {:?} held it",
                    book.holder
                );
                book.holder = Some(client);
                book.tokens.push(token);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
            books[resource].lock().unwrap().holder = None;
            let released = api.release(json!({"resource": name, "owner": owner, "token": token})).await;
            assert_eq!(released.status, 200, "{:?}", released.body);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = HashMap::new();
    for (resource, book) in books.iter().enumerate() {
        let tokens = &book.lock().unwrap().tokens;
        assert_eq!(tokens.len(), CLIENTS / RESOURCES);
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "resource {resource}: {tokens:?}");
        for token in tokens {
            assert!(all.insert(*token, resource).is_none(), "token {token} issued twice");
        }
    }
}
