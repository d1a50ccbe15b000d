//! COMMAND health checks (being written).

use dcos_runtime::task_dir::TaskDir;
use std::time::Duration;

pub(super) async fn run(_dir: &TaskDir, _command: &str, _timeout: Duration) -> Result<(), String> {
    Err("COMMAND checks are being written".to_string())
}
