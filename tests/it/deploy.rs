//! The deployment files as a container runtime, systemd or Kubernetes would read them, checked
//! without any of them: every command they run is one the real `tally` parses, every variable
//! they set is one its configuration accepts, and the compose file and CronJob have what
//! they promise (healthchecks, one writer at a time, the Secret they read). And `tally
//! healthcheck`, the image's HEALTHCHECK, against a tiny server.

use crate::common::{repo, text};
use axum::http::StatusCode;
use std::collections::BTreeSet;
use std::process::{Command, Output};
use tally::sim;
use yaml_rust2::{Yaml, YamlLoader};

fn yaml(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .unwrap_or_else(|| panic!("not a list: {node:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// `tally <args> --help`: exit 0 only when the subcommand and every flag before `--help` exist.
fn parses(args: &[String]) -> Output {
    assert_eq!(args.first().map(String::as_str), Some("tally"), "{args:?}");
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(&args[1..])
        .arg("--help")
        .output()
        .unwrap()
}

fn assert_parses(what: &str, args: &[String]) {
    let output = parses(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}: {args:?} is not a command tally knows:\n{}",
        text(&output)
    );
}

#[test]
fn the_compose_file_runs_the_daemon_with_healthchecks_after_its_database() {
    let compose = &yaml("deploy/compose.yaml")[0];
    let tally = &compose["services"]["tally"];
    let command = strings(&tally["command"]);
    assert_eq!(command, ["tally", "daemon"]);
    assert_parses("services.tally.command", &command);
    let test = strings(&tally["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD");
    assert_eq!(test[1..3], ["tally", "healthcheck"]);
    assert_parses("services.tally.healthcheck.test", &test[1..]);
    assert_eq!(
        tally["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy"),
        "tally starts once PostgreSQL answers"
    );
    assert!(
        compose["services"]["db"]["healthcheck"]["test"]
            .as_vec()
            .is_some(),
        "the database has a healthcheck"
    );
    assert_eq!(tally["env_file"].as_str(), Some("tally.env"));
    assert!(
        repo().join("deploy/tally.env.example").is_file(),
        "the env file's example is there"
    );
    let ports = strings(&tally["ports"]);
    assert!(ports.iter().any(|p| p.ends_with(":9464")), "{ports:?}");
}

#[test]
fn the_cronjob_runs_one_tally_at_a_time_with_its_secret() {
    let cronjob = &yaml("deploy/kubernetes/cronjob.yaml")[0];
    assert_eq!(cronjob["kind"].as_str(), Some("CronJob"));
    assert_eq!(
        cronjob["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let container = &pod["containers"][0];
    let command = strings(&container["command"]);
    assert_eq!(command[..2], ["tally", "run"]);
    assert_parses("the CronJob's command", &command);
    let secret = &yaml("deploy/kubernetes/secret.example.yaml")[0];
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        secret["metadata"]["name"].as_str(),
        "the CronJob reads the example Secret"
    );
    assert!(
        secret["stringData"]["DATABASE_URL"].as_str().is_some(),
        "the Secret carries the database"
    );
}

#[test]
fn the_workers_compose_file_runs_two_workers_of_one_round_after_their_database() {
    let compose = &yaml("deploy/compose.workers.yaml")[0];
    let worker = &compose["services"]["worker"];
    let command = strings(&worker["command"]);
    assert_eq!(command[..3], ["tally", "run", "--worker"]);
    assert_parses("services.worker.command", &command);
    let round = command.iter().position(|a| a == "--round").unwrap() + 1;
    assert!(
        command[round].starts_with("${TALLY_ROUND:?"),
        "both workers get the round's name from one variable, required: {command:?}"
    );
    assert_eq!(worker["deploy"]["replicas"].as_i64(), Some(2));
    assert_eq!(
        worker["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(worker["env_file"].as_str(), Some("tally.env"));
    assert!(
        compose["services"]["db"]["healthcheck"]["test"]
            .as_vec()
            .is_some()
    );
}

#[test]
fn the_workers_cronjob_is_an_indexed_job_whose_pods_share_the_jobs_round() {
    let cronjob = &yaml("deploy/kubernetes/workers-cronjob.yaml")[0];
    assert_eq!(cronjob["kind"].as_str(), Some("CronJob"));
    assert_eq!(
        cronjob["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    let job = &cronjob["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"].as_str(), Some("Indexed"));
    let parallelism = job["parallelism"].as_i64().unwrap();
    assert!(parallelism >= 2, "{parallelism}");
    assert_eq!(job["completions"].as_i64(), Some(parallelism));
    let container = &job["template"]["spec"]["containers"][0];
    let command = strings(&container["command"]);
    assert_parses("the workers' command", &command);
    let round = command.iter().position(|a| a == "--round").unwrap() + 1;
    assert_eq!(command[round], "$(ROUND)");
    let round_env = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("ROUND"))
        .expect("ROUND is set");
    assert_eq!(
        round_env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.labels['batch.kubernetes.io/job-name']"),
        "the pods of one Job share one round, named after the Job"
    );
    let secret = &yaml("deploy/kubernetes/secret.example.yaml")[0];
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        secret["metadata"]["name"].as_str()
    );
}

/// Every command systemd starts, and the image's CMD and HEALTHCHECK, parse.
#[test]
fn the_systemd_units_and_the_image_run_commands_tally_knows() {
    for unit in ["tally.service", "tally-daemon.service"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let mut args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
        assert_eq!(args[0], "/usr/local/bin/tally", "{unit}");
        args[0] = "tally".into();
        assert_parses(unit, &args);
    }
    let timer = std::fs::read_to_string(repo().join("deploy/systemd/tally-nightly.timer")).unwrap();
    assert!(timer.contains("Unit=tally.service"), "{timer}");

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    // The image's own command: the last unindented CMD (the HEALTHCHECK's is indented).
    let cmd = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("the Dockerfile has a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(cmd, ["tally", "daemon"]);
    assert_parses("CMD", &cmd);
    let probe = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .find_map(|l| l.trim().strip_prefix("CMD "))
        .expect("HEALTHCHECK has a CMD");
    let probe: Vec<String> = serde_json::from_str(probe).unwrap();
    assert_eq!(probe[..2], ["tally", "healthcheck"]);
    assert_parses("HEALTHCHECK", &probe);
    assert!(dockerfile.contains("EXPOSE 9464"), "{dockerfile}");
    assert!(
        dockerfile.contains("TALLY__DAEMON__LISTEN=0.0.0.0:9464"),
        "{dockerfile}"
    );
}

/// Every `TALLY__...` variable the deployment files name (commented ones included: they are
/// there to be uncommented), and `DATABASE_URL`, set at once on the demo configuration: the
/// check accepts them all, so none is a key tally does not have.
#[test]
fn every_variable_the_deployment_files_name_is_a_key_tally_accepts() {
    let mut names = BTreeSet::new();
    for file in [
        "deploy/compose.yaml",
        "deploy/compose.workers.yaml",
        "deploy/kubernetes/workers-cronjob.yaml",
        "deploy/tally.env.example",
        "deploy/postgres.env.example",
        "deploy/kubernetes/cronjob.yaml",
        "deploy/kubernetes/secret.example.yaml",
        "deploy/systemd/tally.service",
        "deploy/systemd/tally-daemon.service",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for (at, _) in text.match_indices("TALLY__") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `TALLY__SOURCES__GENESYS__ORGS__<NAME>__...` is a pattern, not a name.
            if !name.ends_with('_') {
                names.insert(name);
            }
        }
    }
    for expected in [
        "TALLY__SOURCES__BILLABLE_USERS__TOKEN",
        "TALLY__SINKS__RAMBASE__CLIENT_SECRET",
        "TALLY__NOTIFY__WEBHOOK_TOKEN",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    let demo = std::fs::read_to_string(config.join("demo.toml")).unwrap();
    std::fs::write(
        config.join("demo.toml"),
        format!("{demo}\n[notify]\nurl = \"https://hooks.example.com/tally\"\n"),
    )
    .unwrap();
    let secrets = sim::demo_secrets();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir.path())
        .args(["--config", "config/demo.toml", "check-config"])
        .env("DATABASE_URL", "postgres://tally:change-me@db:5432/tally")
        .envs(secrets.iter().cloned())
        .envs(
            names
                .iter()
                .filter(|n| !secrets.iter().any(|(k, _)| k == *n))
                .map(|n| (n.clone(), "change-me".to_owned())),
        )
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{names:?}:\n{}",
        text(&output)
    );
}

/// A server answering `status` on /healthz; its address.
async fn health_server(status: StatusCode) -> String {
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || async move { (status, "store: ok") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn healthcheck(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("healthcheck")
            .args(args)
            .env_remove("TALLY__DAEMON__LISTEN")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_on_200_and_1_on_anything_else() {
    let healthy = health_server(StatusCode::OK).await;
    let output = healthcheck(
        vec!["--url".into(), format!("http://{healthy}/healthz")],
        vec![],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // Without --url: the address the image sets in TALLY__DAEMON__LISTEN.
    let port = healthy.rsplit(':').next().unwrap();
    let output = healthcheck(
        vec![],
        vec![("TALLY__DAEMON__LISTEN".into(), format!("0.0.0.0:{port}"))],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let sick = health_server(StatusCode::SERVICE_UNAVAILABLE).await;
    let output = healthcheck(
        vec!["--url".into(), format!("http://{sick}/healthz")],
        vec![],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("503"), "{}", text(&output));

    // Nothing listening: a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let output = healthcheck(
        vec!["--url".into(), format!("http://{addr}/healthz")],
        vec![],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("nothing answered"),
        "{}",
        text(&output)
    );
}
