//! multiprocessing in the jail, in the suite's mode: a private `/dev/shm`
//! per run, functions of the script that pickle, and nothing of one run's
//! shared memory or unix sockets that another run can reach.

use crate::common::{PolicyDir, TestServer, policy_server_config, server, tenant_yaml};
use serde_json::json;

#[tokio::test]
async fn pool_queue_lock_manager_and_shared_memory_work() {
    let script = r#"
import multiprocessing as mp
from multiprocessing import shared_memory

def square(n):
    return n * n

def produce(queue, lock, counter):
    with lock:
        counter.value += 1
    queue.put("from child")

def main():
    with mp.Pool(2) as pool:
        squares = pool.map(square, range(6))
    queue, lock = mp.Queue(), mp.Lock()
    counter = mp.Value("i", 0)
    child = mp.Process(target=produce, args=(queue, lock, counter))
    child.start()
    message = queue.get(timeout=10)
    child.join()
    block = shared_memory.SharedMemory(create=True, size=16)
    block.buf[:5] = b"hello"
    copy = shared_memory.SharedMemory(name=block.name)
    shared = bytes(copy.buf[:5]).decode()
    copy.close()
    block.close()
    block.unlink()
    with mp.Manager() as manager:
        table = manager.dict()
        worker = mp.Process(target=table.__setitem__, args=("k", 42))
        worker.start()
        worker.join()
        managed = dict(table)
    return {"squares": squares, "queue": message, "counter": counter.value,
            "shared": shared, "managed": managed, "exit": child.exitcode}
"#;
    let r = server()
        .execute(json!({"script": script, "timeout_ms": 20000}))
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({"squares": [0, 1, 4, 9, 16, 25], "queue": "from child", "counter": 1,
                "shared": "hello", "managed": {"k": 42}, "exit": 0})
    );
}

#[tokio::test]
async fn each_run_has_a_dev_shm_of_its_own() {
    // Two runs at once: each leaves a file in /dev/shm and waits, then lists
    // what it sees. Neither sees the other's, and a later run sees neither.
    let script = |tag: &str| {
        format!(
            "import os, time\ndef main():\n    open('/dev/shm/{tag}', 'w').write('x')\n    time.sleep(1)\n    return sorted(os.listdir('/dev/shm'))"
        )
    };
    let (a, b) = tokio::join!(
        server().execute(json!({"script": script("run-a"), "cache": false})),
        server().execute(json!({"script": script("run-b"), "cache": false})),
    );
    assert_eq!(a.assert_ok(), &json!(["run-a"]));
    assert_eq!(b.assert_ok(), &json!(["run-b"]));
    let later = server()
        .run("import os\ndef main():\n    return os.listdir('/dev/shm')")
        .await;
    assert_eq!(later.assert_ok(), &json!([]));
}

#[tokio::test]
async fn filling_dev_shm_ends_in_enospc_or_the_runs_memory_limit() {
    // Files of 4 MiB, under the file-size limit (16 MiB), up to 512 MiB.
    let fill = "import errno\ndef main():\n    try:\n        for i in range(128):\n            with open('/dev/shm/fill-%d' % i, 'wb') as f:\n                f.write(b'x' * (4 << 20))\n    except OSError as e:\n        return errno.errorcode[e.errno]\n    return 'filled'";
    // Smaller than the run's memory: the tmpfs is full first.
    let dir = PolicyDir::new();
    dir.write(
        "small.yaml",
        &tenant_yaml(
            "small-shm",
            "pyx_small_shm_key",
            "  sandbox:\n    shmMiB: 8\n    memoryMiB: 256\n",
        ),
    );
    dir.write(
        "large.yaml",
        &tenant_yaml(
            "large-shm",
            "pyx_large_shm_key",
            "  sandbox:\n    shmMiB: 1024\n    memoryMiB: 128\n",
        ),
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let small = server
        .execute_with_key(json!({"script": fill}), "pyx_small_shm_key")
        .await;
    assert_eq!(small.assert_ok(), "ENOSPC");
    // Larger than the run's memory: its pages are the run's, so the memory
    // limit ends it, as it would any allocation.
    let large = server
        .execute_with_key(json!({"script": fill}), "pyx_large_shm_key")
        .await;
    large.assert_problem(422, "memory-limit");
    let after = server
        .execute_with_key(
            json!({"script": "def main():\n    return 'alive'"}),
            "pyx_large_shm_key",
        )
        .await;
    assert_eq!(after.assert_ok(), "alive");
}
