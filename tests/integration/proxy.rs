//! A TCP proxy on 127.0.0.1 that can hold requests: what a hung API server, a partitioned replica or a
//! slow AWS call looks like to the controller. Held bytes are forwarded once released, even when the
//! client has given up meanwhile, as a request already on the wire reaches the server anyway. It can also
//! delay every request (a slow upstream), or close every connection that sends anything (one that is down).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which client bytes are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Everything passes.
    Nothing,
    /// Every chunk the clients send.
    Everything,
    /// Chunks that contain this text (an AWS query action such as `Action=CreateUser`).
    Containing(String),
    /// Nothing is held: a connection that sends anything is closed unanswered (an upstream that is down).
    Cut,
}

pub struct Proxy {
    pub url: String,
    hold: watch::Sender<Hold>,
    delay: watch::Sender<Duration>,
    held: Arc<AtomicUsize>,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port` or `https://host:port`: TLS passes through, so its URL
    /// keeps the scheme), passing everything until told otherwise.
    pub async fn start(upstream: &str) -> Proxy {
        let (scheme, rest) = upstream.split_once("://").unwrap_or(("http", upstream));
        let upstream = rest.trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let url = format!("{scheme}://{}", listener.local_addr().expect("proxy address"));
        let (hold, holding) = watch::channel(Hold::Nothing);
        let (delay, delaying) = watch::channel(Duration::ZERO);
        let held = Arc::new(AtomicUsize::new(0));
        let counter = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let slow = delaying.clone();
                tokio::spawn(pipe(client, server, holding.clone(), slow, counter.clone()));
            }
        });
        Proxy { url, hold, delay, held }
    }

    /// Delays every chunk the clients send by `delay`: a slow upstream.
    pub fn delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    pub fn hold(&self, what: Hold) {
        self.hold.send_replace(what);
    }

    /// How many chunks are being held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// A dropped proxy lets everything through, at once, until the test's runtime ends: a test's locals drop
/// before its environment, whose teardown needs the controller to reach AWS (its clients still point here)
/// to delete what the test made.
impl Drop for Proxy {
    fn drop(&mut self) {
        self.hold.send_replace(Hold::Nothing);
        self.delay.send_replace(Duration::ZERO);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    holding: watch::Receiver<Hold>,
    delaying: watch::Receiver<Duration>,
    held: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // A cut connection is dropped at once, both ways: the client sees it closed, unanswered.
    let cut = Arc::new(tokio::sync::Notify::new());
    let cutting = cut.clone();
    let requests = async move {
        let mut holding = holding;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            if *holding.borrow() == Hold::Cut {
                cutting.notify_one();
                return;
            }
            let is_held = |hold: &Hold| match hold {
                Hold::Nothing | Hold::Cut => false,
                Hold::Everything => true,
                Hold::Containing(text) => chunk.windows(text.len()).any(|w| w == text.as_bytes()),
            };
            if is_held(&holding.borrow()) {
                held.fetch_add(1, Ordering::SeqCst);
                let _ = holding.wait_for(|hold| !is_held(hold)).await;
                held.fetch_sub(1, Ordering::SeqCst);
            }
            let delay = *delaying.borrow();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if server_write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let responses = async move {
        tokio::select! {
            _ = tokio::io::copy(&mut server_read, &mut client_write) => {
                let _ = client_write.shutdown().await;
            }
            () = cut.notified() => {}
        }
    };
    tokio::join!(requests, responses);
}
