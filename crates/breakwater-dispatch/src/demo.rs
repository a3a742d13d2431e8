pub async fn run(_o: DemoOptions) -> anyhow::Result<bool> { Ok(true) }
#[derive(Debug)] pub struct DemoOptions { pub duration: std::time::Duration, pub listen: std::net::SocketAddr }
