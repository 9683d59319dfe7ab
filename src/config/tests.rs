//! The configuration: defaults, layers, and what is refused.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

#[test]
fn the_built_in_defaults_are_the_documented_ones_and_valid() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.database.url.expose_secret(),
        "postgres://postgres@127.0.0.1:5432/koostatus"
    );
    assert!(c.database.read_url.is_none());
    assert_eq!(c.database.max_connections.get(), 16);
    assert_eq!(c.database.statement_timeout, Duration::from_secs(5));
    assert_eq!(c.ingest.batch_max.get(), 256);
    assert_eq!(c.auth.credential_ttl, Duration::from_secs(2));
    assert_eq!(c.server.events_heartbeat, Duration::from_secs(15));
    assert_eq!(c.events.ticket_ttl, Duration::from_secs(600));
    assert_eq!(c.events.buffer, 8192);
    assert!(c.cors.allowed_origins.is_empty());
    assert_eq!(c.log.format, LogFormat::Human);
}

// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
#[test]
fn a_bad_setting_is_named() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[database]\nmax_connections = \"many\"\n")?;
        let o = Overrides {
            config_file: Some("c.toml".into()),
            ..Default::default()
        };
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(err.contains("`database.max_connections`"), "{err}");
        jail.set_env("KOOSTATUS_AUTH__CREDENTIAL_TTL", "1h");
        jail.create_file("c.toml", "")?;
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(err.contains("`auth.credential_ttl`"), "{err}");
        jail.create_file("c.toml", "[webhook]\nmax_body = 3\n")?;
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(err.contains("`webhook.max_body`"), "{err}");
        // A count that must not be zero is named by serde.
        jail.create_file("c.toml", "[ingest]\nwriters = 0\n")?;
        let err = Config::load(&o).unwrap_err().to_string();
        assert!(
            err.contains("`ingest.writers`") && err.contains("nonzero"),
            "{err}"
        );
        Ok(())
    });
}

#[allow(clippy::result_large_err)]
#[test]
fn precedence_is_file_then_env_then_flags() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "listen = \"127.0.0.1:1\"\n[webhook]\nmax_body_bytes = 1000\n",
        )?;
        let mut o = Overrides {
            config_file: Some("c.toml".into()),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.webhook.max_body_bytes, 1000);
        jail.set_env("KOOSTATUS_LISTEN", "127.0.0.1:2");
        jail.set_env("DATABASE_URL", "postgres://h/d1");
        assert_eq!(Config::load(&o).unwrap().listen.port(), 2);
        o.listen = Some("127.0.0.1:3".parse().unwrap());
        o.database_url = Some("postgres://h/d2".into());
        let c = Config::load(&o).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.database.url.expose_secret(), "postgres://h/d2");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn bad_database_urls_are_refused_at_load_naming_the_setting_not_the_url() {
    figment::Jail::expect_with(|jail| {
        for (var, setting, url, why) in [
            (
                "DATABASE_URL",
                "database.url",
                "mysql://u:pw-1@h/d",
                "must start with postgres://",
            ),
            (
                "KOOSTATUS_DATABASE__READ_URL",
                "database.read_url",
                "postgres://u:pw-2@h:notaport/d",
                "not a valid PostgreSQL URL",
            ),
        ] {
            jail.clear_env();
            jail.set_env(var, url);
            let e = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{setting}`")) && e.contains(why),
                "{e}"
            );
            assert!(!e.contains("pw-"), "the URL is quoted: {e}");
        }
        jail.clear_env();
        jail.set_env(
            "KOOSTATUS_DATABASE__READ_URL",
            "postgres://u:pw-3@replica:5433/r",
        );
        let c = Config::load(&Overrides::default()).unwrap();
        let read = c.database.read_url.expect("read_url set");
        assert_eq!(read.options().get_port(), 5433);
        assert_eq!(format!("{read:?}"), "DatabaseUrl(replica:5433/r)");
        // Several hosts, as libpq writes them: one set of options each.
        jail.set_env(
            "DATABASE_URL",
            "postgres://u:pw-4@db1:5432,db2:5433,[::1]/k?sslmode=disable",
        );
        let c = Config::load(&Overrides::default()).unwrap();
        let hosts: Vec<(String, u16, String)> = c
            .database
            .url
            .hosts()
            .iter()
            .map(|o| {
                let db = o.get_database().unwrap_or_default().to_owned();
                (o.get_host().to_owned(), o.get_port(), db)
            })
            .collect();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0], ("db1".into(), 5432, "k".into()));
        assert_eq!(hosts[1], ("db2".into(), 5433, "k".into()));
        assert_eq!((hosts[2].1, hosts[2].2.as_str()), (5432, "k"));
        let debug = format!("{:?}", c.database.url);
        assert!(debug.starts_with("DatabaseUrl(db1:5432,db2:5433,") && !debug.contains("pw-4"));
        jail.set_env("DATABASE_URL", "postgres://u:pw-5@db1,,db2/k");
        let e = Config::load(&Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("empty host") && !e.contains("pw-5"), "{e}");
        Ok(())
    });
}
