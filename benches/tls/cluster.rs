//! A PostgreSQL cluster of the benchmark's own with TLS on, and the
//! certificates it serves.

// The benchmark's settings, types and imports.
use super::*;

/// A PostgreSQL cluster of the benchmark's own with TLS on, run as the
/// `postgres` user (PostgreSQL refuses root), default settings otherwise.
pub struct Cluster {
    data: std::path::PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start(certs: &std::path::Path) -> anyhow::Result<Cluster> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = std::env::temp_dir().join(format!("koostatus-bench-cluster-{port}"));
        std::fs::create_dir_all(&data)?;
        let bin = String::from_utf8(Command::new("pg_config").arg("--bindir").output()?.stdout)?;
        let bin = std::path::PathBuf::from(bin.trim());
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&data)
            .status()?;
        Command::new("chmod").arg("700").arg(&data).status()?;
        let d = data.to_str().unwrap_or_default().to_owned();
        as_postgres(
            &bin.join("initdb"),
            &["-D", &d, "-A", "trust", "-U", "postgres"],
        )?;
        for file in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(file), data.join(file))?;
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf"))?;
        conf.push_str("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf)?;
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data)
            .status()?;
        Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()?;
        let options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={d}");
        let log = format!("{d}/log");
        as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &d, "-l", &log, "-w", "-o", &options, "start"],
        )?;
        Ok(Cluster { data, port })
    }

    pub fn stop(&self) {
        if let Ok(bin) = Command::new("pg_config").arg("--bindir").output() {
            let bin = std::path::PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
            let d = self.data.to_str().unwrap_or_default();
            let _ = as_postgres(
                &bin.join("pg_ctl"),
                &["-D", d, "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Runs a PostgreSQL program as `postgres` when this runs as root.
pub fn as_postgres(program: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let ok = command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(ok.success(), "{} {args:?} failed", program.display());
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 it signed.
pub fn make_certificates(dir: &std::path::Path) -> anyhow::Result<()> {
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(ok.success(), "openssl {args:?} failed");
        Ok(())
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=bench CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=bench",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ])
}
