//! `upgrade`, `rollback` and `status`: switching the live version of the appliance, watched by
//! `qsfs-health`, and switched back by itself when the new version does not become healthy
//! (Fedora CoreOS's greenboot: an update that fails its health checks is rolled back).
//!
//! A switch from version A to B: refuse unless B's binaries read every on-disk format A's
//! write ([`Formats::unreadable_by`]); stop every qsfs unit (a clean stop: zdb's `close`
//! uploads what changed); record the switch in `state.json` with the version to return to if
//! it is cut short; make B's files live ([`Store::activate`]); `daemon-reload` and start
//! `qsfs.target` (its `qsfs-config.service` runs `install-config`, which follows B's config
//! defaults where the operator did not edit them); then watch until every qsfs unit is active
//! and `qsfs-health check` says `ok`, and stays so for the settle time, within the watch time.
//! Healthy: B is current and A is kept as the version to return to. Not healthy: a journal
//! entry says why, and the same switch runs back to A (unless A could not read what B wrote:
//! B stays, and the exit code says so). A switch cut short (power cut, kill) is finished by
//! `rollback`, towards the version recorded to return to (or, if that one could not read what
//! the other may have written, towards the other).
//!
//! The logic is here, apart from the machine it drives ([`Machine`]: systemd and
//! `qsfs-health` on a real one, a scripted one in the tests).

use super::tree::{Formats, ImageManifest};
use super::versions::{Action, Event, Installed, State, Store, Switch};
use super::Error;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What `qsfs-health` and systemd say about the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every qsfs unit active and `qsfs-health check` ok.
    Healthy,
    /// Why not.
    Unhealthy(String),
}

/// The machine a switch drives: its units, its health checker, its clock and journal.
pub trait Machine {
    /// Stops every qsfs unit and waits until they are stopped.
    fn stop(&mut self) -> Result<(), String>;
    /// Reloads the unit files and starts `qsfs.target` (without waiting for it).
    fn start(&mut self) -> Result<(), String>;
    /// Whether the appliance is healthy now.
    fn health(&mut self) -> Health;
    /// Waits.
    fn sleep(&mut self, duration: Duration);
    /// The time, unix milliseconds (for the records).
    fn now_unix_ms(&self) -> u64;
    /// Milliseconds on a clock that never jumps (for the watch).
    fn monotonic_ms(&self) -> u64;
    /// Writes `event` to the journal.
    fn journal(&mut self, event: &Event);
    /// Tells the operator what is happening.
    fn progress(&mut self, line: &str);
}

/// How long to watch a version for health.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// How long the new version has to become healthy.
    pub within: Duration,
    /// How long it must stay healthy to count (a unit that fails after its start, a status
    /// left by the version before).
    pub settle: Duration,
    /// How often to ask.
    pub every: Duration,
}

/// Waits until `machine` has been healthy for `watch.settle`, for at most `watch.within`
/// (plus the settle time); the last reason otherwise.
fn watch_health(machine: &mut impl Machine, watch: Watch) -> Health {
    let start = machine.monotonic_ms();
    let settle = watch.settle.as_millis() as u64;
    let deadline = start + watch.within.as_millis() as u64;
    let mut healthy_since = None;
    loop {
        let now = machine.monotonic_ms();
        let health = machine.health();
        match &health {
            Health::Healthy => {
                let since = *healthy_since.get_or_insert(now);
                if now.saturating_sub(since) >= settle {
                    return Health::Healthy;
                }
                if since > deadline {
                    return Health::Unhealthy(format!(
                        "not healthy within {} s",
                        watch.within.as_secs()
                    ));
                }
            }
            Health::Unhealthy(_) => {
                healthy_since = None;
                if now >= deadline {
                    return health;
                }
            }
        }
        machine.sleep(watch.every);
    }
}

/// What a switch ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The event recorded in `state.json` (and the journal).
    pub event: Event,
    /// The version live now.
    pub current: String,
    /// After an automatic rollback: whether the old version became healthy again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_after_rollback: Option<bool>,
}

impl Outcome {
    /// The exit code of `qsfs-image` for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self.event.action {
            Action::Upgraded | Action::RolledBack => super::exit::OK,
            Action::UpgradeRolledBack if self.healthy_after_rollback == Some(true) => {
                super::exit::ROLLED_BACK
            }
            Action::UpgradeRolledBack | Action::UpgradeUnhealthy | Action::RollbackUnhealthy => {
                super::exit::UNHEALTHY
            }
        }
    }

    /// One line for the operator.
    pub fn describe(&self) -> String {
        let Event {
            from, to, reason, ..
        } = &self.event;
        let reason = reason.as_deref().unwrap_or_default();
        match self.event.action {
            Action::Upgraded => format!("upgraded from {from} to {to}: healthy"),
            Action::RolledBack => format!("rolled back from {from} to {to}: healthy"),
            Action::UpgradeRolledBack => format!(
                "the upgrade to {to} did not become healthy ({reason}): rolled back to {from}, \
                 which is {}",
                if self.healthy_after_rollback == Some(true) {
                    "healthy"
                } else {
                    "NOT healthy either (see qsfs-health check)"
                }
            ),
            Action::UpgradeUnhealthy => format!(
                "the upgrade to {to} did not become healthy ({reason}) and cannot be rolled \
                 back; {to} stays"
            ),
            Action::RollbackUnhealthy => {
                format!("the rollback to {to} did not become healthy ({reason}); {to} stays")
            }
        }
    }
}

/// Refuses while a switch that was cut short is recorded: `rollback` finishes it first.
pub fn refuse_interrupted(store: &Store) -> Result<Option<State>, Error> {
    let state = store.state()?;
    if let Some(switch) = state.as_ref().and_then(|s| s.switching.as_ref()) {
        return Err(Error::SwitchRefused(format!(
            "a switch from {} to {} did not finish; run `qsfs-image rollback` to return to {}",
            switch.from, switch.to, switch.recover_to
        )));
    }
    Ok(state)
}

/// The state before a switch: the live version recorded as one (captured on the first
/// upgrade of a machine installed by unpacking a tarball, or after an image was unpacked by
/// hand over a recorded one: what runs is current), and its `MANIFEST`.
fn live(store: &Store) -> Result<(State, String, ImageManifest), Error> {
    let recorded = refuse_interrupted(store)?;
    let id = store.capture_live()?;
    let state = match recorded {
        Some(mut state) => {
            state.current = id.clone();
            state
        }
        None => State::new(&id),
    };
    let manifest = store.manifest(&id)?;
    Ok((state, id, manifest))
}

/// Why `target` cannot replace `running`, if it cannot.
fn formats_refusal(running: &Formats, target: &Formats, what: &str) -> Option<String> {
    let unreadable = running.unreadable_by(target);
    (!unreadable.is_empty()).then(|| {
        format!(
            "{what} could not read what the running version wrote: {}",
            unreadable.join(", ")
        )
    })
}

/// One switch: the version live now (and any other whose files may be live), the version to
/// make live, and the one to return to if it is cut short.
struct Plan<'a> {
    from: &'a str,
    live: Vec<&'a ImageManifest>,
    to: &'a str,
    to_manifest: &'a ImageManifest,
    recover_to: &'a str,
}

/// Stops the appliance, records the switch, makes `to` live and starts it; then watches. If
/// the files cannot be switched, the version that was live is made live and started again.
fn switch(
    store: &Store,
    machine: &mut impl Machine,
    state: &mut State,
    plan: Plan,
    watch: Watch,
) -> Result<Health, Error> {
    machine.progress("stopping every qsfs unit (a clean stop: zdb uploads what changed)");
    if let Err(why) = machine.stop() {
        let _ = machine.start();
        return Err(Error::SwitchRefused(format!(
            "the qsfs units did not stop ({why}); nothing was switched"
        )));
    }
    state.switching = Some(Switch {
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        recover_to: plan.recover_to.to_string(),
        started_unix_ms: machine.now_unix_ms(),
    });
    if let Err(e) = store.write_state(state) {
        let _ = machine.start();
        return Err(e);
    }
    machine.progress(&format!("making {} live", plan.to));
    if let Err(e) = store.activate(&plan.live, plan.to) {
        let mut both = plan.live.clone();
        both.push(plan.to_manifest);
        if let Err(again) = store.activate(&both, plan.from) {
            return Err(Error::SwitchCutShort(format!(
                "making {} live failed ({e}), and so did putting {} back ({again}); the qsfs \
                 units are stopped: run `qsfs-image rollback`",
                plan.to, plan.from
            )));
        }
        // `from` is live again, as before this switch; a rollback returns to `recover_to`.
        state.switching = None;
        state.current = plan.from.to_string();
        if plan.recover_to != plan.from {
            state.previous = Some(plan.recover_to.to_string());
        }
        let _ = store.write_state(state);
        let _ = machine.start();
        return Err(e);
    }
    machine.progress(&format!(
        "starting qsfs.target; watching its health for up to {} s (healthy for {} s counts)",
        watch.within.as_secs(),
        watch.settle.as_secs()
    ));
    if let Err(why) = machine.start() {
        machine.progress(&format!("starting qsfs.target failed: {why}"));
    }
    Ok(watch_health(machine, watch))
}

/// Upgrades to the version `new` (added to the store by [`Store::add`]).
pub fn upgrade(
    store: &Store,
    machine: &mut impl Machine,
    new: &Installed,
    watch: Watch,
) -> Result<Outcome, Error> {
    let (mut state, old, old_manifest) = live(store)?;
    if new.id == old {
        return Err(Error::SwitchRefused(format!(
            "{old} is already the live version"
        )));
    }
    if let Some(why) = formats_refusal(&old_manifest.formats, &new.manifest.formats, &new.id) {
        return Err(Error::SwitchRefused(why));
    }
    let way_back = formats_refusal(&new.manifest.formats, &old_manifest.formats, &old);
    if let Some(why) = &way_back {
        machine.progress(&format!(
            "no rollback will be possible after this upgrade: {why}"
        ));
    }
    let plan = Plan {
        from: &old,
        live: vec![&old_manifest],
        to: &new.id,
        to_manifest: &new.manifest,
        recover_to: &old,
    };
    let health = switch(store, machine, &mut state, plan, watch)?;
    let mut event = Event {
        at_unix_ms: 0,
        action: Action::Upgraded,
        from: old.clone(),
        to: new.id.clone(),
        reason: None,
    };
    let mut healthy_after_rollback = None;
    match (health, way_back) {
        (Health::Healthy, _) => {
            state.previous = Some(old.clone());
            state.current = new.id.clone();
        }
        (Health::Unhealthy(reason), Some(_)) => {
            event.action = Action::UpgradeUnhealthy;
            event.reason = Some(reason);
            state.previous = Some(old.clone());
            state.current = new.id.clone();
        }
        (Health::Unhealthy(reason), None) => {
            event.action = Action::UpgradeRolledBack;
            event.reason = Some(reason);
            event.at_unix_ms = machine.now_unix_ms();
            machine.journal(&event);
            machine.progress(&format!(
                "{} did not become healthy: {}; rolling back to {old}",
                new.id,
                event.reason.as_deref().unwrap_or_default()
            ));
            let plan = Plan {
                from: &new.id,
                live: vec![&new.manifest, &old_manifest],
                to: &old,
                to_manifest: &old_manifest,
                recover_to: &old,
            };
            let back = switch(store, machine, &mut state, plan, watch).map_err(|e| {
                Error::SwitchCutShort(format!(
                    "{} is live and not healthy, and going back to {old} failed: {e}; run \
                     `qsfs-image rollback`",
                    new.id
                ))
            })?;
            healthy_after_rollback = Some(back == Health::Healthy);
            if let Health::Unhealthy(reason) = back {
                let mut still = event.clone();
                still.action = Action::RollbackUnhealthy;
                still.reason = Some(reason);
                (still.from, still.to) = (new.id.clone(), old.clone());
                machine.journal(&still);
            }
            state.current = old.clone();
        }
    }
    finish(store, machine, state, event, healthy_after_rollback)
}

/// Returns to the previous version, or finishes a switch that was cut short (towards the
/// version it recorded to return to, unless that one could not read what the other may have
/// written).
pub fn rollback(store: &Store, machine: &mut impl Machine, watch: Watch) -> Result<Outcome, Error> {
    let Some(mut state) = store.state()? else {
        return Err(Error::SwitchRefused(
            "no upgrade was ever made on this machine: there is no version to return to".into(),
        ));
    };
    let mut keep_previous = false;
    let (from, target) = match state.switching.clone() {
        Some(cut) => {
            let other = if cut.recover_to == cut.from {
                cut.to
            } else {
                cut.from
            };
            let (recover, other_manifest) =
                (store.manifest(&cut.recover_to)?, store.manifest(&other)?);
            if other_manifest
                .formats
                .unreadable_by(&recover.formats)
                .is_empty()
            {
                // Back to where the upgrade or rollback began: what it returns to stays.
                keep_previous = true;
                (other, cut.recover_to)
            } else {
                machine.progress(&format!(
                    "{} could not read what {other} may have written: finishing the switch to \
                     {other} instead",
                    cut.recover_to
                ));
                (cut.recover_to, other)
            }
        }
        None => {
            let live = store.capture_live()?;
            let target = state
                .previous
                .clone()
                .filter(|p| *p != live)
                .ok_or_else(|| {
                    Error::SwitchRefused(format!("{live} has no previous version to return to"))
                })?;
            (live, target)
        }
    };
    let from_manifest = store.manifest(&from)?;
    let target_manifest = store.manifest(&target)?;
    let (_, live_manifest) = store.live()?;
    if state.switching.is_none() {
        if let Some(why) =
            formats_refusal(&from_manifest.formats, &target_manifest.formats, &target)
        {
            return Err(Error::SwitchRefused(why));
        }
    }
    let plan = Plan {
        from: &from,
        live: vec![&from_manifest, &live_manifest, &target_manifest],
        to: &target,
        to_manifest: &target_manifest,
        recover_to: &target,
    };
    let health = switch(store, machine, &mut state, plan, watch)?;
    let mut event = Event {
        at_unix_ms: 0,
        action: Action::RolledBack,
        from: from.clone(),
        to: target.clone(),
        reason: None,
    };
    if let Health::Unhealthy(reason) = health {
        event.action = Action::RollbackUnhealthy;
        event.reason = Some(reason);
    }
    if !keep_previous {
        state.previous = Some(from);
    }
    state.current = target;
    finish(store, machine, state, event, None)
}

/// Records the end of a switch, keeps only the current and previous versions.
fn finish(
    store: &Store,
    machine: &mut impl Machine,
    mut state: State,
    mut event: Event,
    healthy_after_rollback: Option<bool>,
) -> Result<Outcome, Error> {
    event.at_unix_ms = machine.now_unix_ms();
    state.switching = None;
    state.record(event.clone());
    store.write_state(&state)?;
    if event.action != Action::UpgradeRolledBack {
        machine.journal(&event);
    }
    let mut keep = vec![state.current.as_str()];
    keep.extend(state.previous.as_deref());
    match store.prune(&keep) {
        Ok(removed) => {
            for id in removed {
                machine.progress(&format!(
                    "removed version {id} (neither current nor previous)"
                ));
            }
        }
        Err(e) => machine.progress(&format!("could not remove an old version: {e}")),
    }
    Ok(Outcome {
        event,
        current: state.current,
        healthy_after_rollback,
    })
}

/// `status`: the installed versions and the state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The live version (from the live `MANIFEST`).
    pub live: String,
    /// `state.json`, if an upgrade was ever made.
    pub state: Option<State>,
    /// Every installed version.
    pub versions: Vec<VersionInfo>,
}

/// One installed version in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Its directory name.
    pub id: String,
    /// `name version` of the image.
    pub image: String,
    /// When it was built.
    pub build_time: String,
    /// The qsfs version of its binaries.
    pub qsfs_version: String,
    /// The formats its binaries write.
    pub formats: Formats,
}

/// Reads the status of the machine whose root is `root`.
pub fn status(root: &Path) -> Result<Status, Error> {
    let store = Store::new(root);
    let (live, _) = store.live()?;
    let versions = store
        .installed()?
        .into_iter()
        .map(|v| VersionInfo {
            image: format!("{} {}", v.manifest.image.name, v.manifest.image.version),
            build_time: v.manifest.image.build_time.clone(),
            qsfs_version: v.manifest.image.qsfs_version.clone(),
            formats: v.manifest.formats,
            id: v.id,
        })
        .collect();
    Ok(Status {
        live,
        state: store.state()?,
        versions,
    })
}

impl Status {
    /// The human-readable status.
    pub fn to_text(&self) -> String {
        let mut text = format!("live: {}\n", self.live);
        let (current, previous) = match &self.state {
            Some(state) => (Some(state.current.as_str()), state.previous.as_deref()),
            None => (None, None),
        };
        if self.state.is_none() {
            text.push_str("no upgrade was made on this machine (no versions recorded)\n");
        }
        for v in &self.versions {
            let mark = if Some(v.id.as_str()) == current {
                "current"
            } else if Some(v.id.as_str()) == previous {
                "previous"
            } else {
                ""
            };
            text.push_str(&format!(
                "  {:<8} {}  {} (built {}, qsfs {})\n",
                mark, v.id, v.image, v.build_time, v.qsfs_version
            ));
        }
        if let Some(state) = &self.state {
            if let Some(switch) = &state.switching {
                text.push_str(&format!(
                    "INTERRUPTED: a switch from {} to {} did not finish: run `qsfs-image rollback`\n",
                    switch.from, switch.to
                ));
            }
            if let Some(last) = state.history.last() {
                text.push_str(&format!(
                    "last: {} at {}: {} -> {}{}\n",
                    serde_json::to_value(last.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    crate::clock::utc(last.at_unix_ms),
                    last.from,
                    last.to,
                    last.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layout;
    use crate::image::tree::{ComponentInfo, EntryInfo, ImageInfo, Role};
    use crate::image::versions::version_id;
    use std::collections::VecDeque;
    use std::path::PathBuf;

    /// A scripted machine: each health answer in turn (then healthy), a clock that moves
    /// only when it sleeps, and a log of what was asked of it.
    #[derive(Default)]
    struct Scripted {
        health: VecDeque<Health>,
        now: u64,
        calls: Vec<String>,
        journal: Vec<Event>,
    }

    impl Machine for Scripted {
        fn stop(&mut self) -> Result<(), String> {
            self.calls.push("stop".into());
            Ok(())
        }
        fn start(&mut self) -> Result<(), String> {
            self.calls.push("start".into());
            Ok(())
        }
        fn health(&mut self) -> Health {
            self.health.pop_front().unwrap_or(Health::Healthy)
        }
        fn sleep(&mut self, duration: Duration) {
            self.now += duration.as_millis() as u64;
        }
        fn now_unix_ms(&self) -> u64 {
            self.now
        }
        fn monotonic_ms(&self) -> u64 {
            self.now
        }
        fn journal(&mut self, event: &Event) {
            self.journal.push(event.clone());
        }
        fn progress(&mut self, _: &str) {}
    }

    const WATCH: Watch = Watch {
        within: Duration::from_secs(10),
        settle: Duration::ZERO,
        every: Duration::from_secs(3),
    };

    /// Formats of a later build: `name` at version 2.
    fn newer(name: &str) -> Formats {
        let mut formats = Formats::default();
        formats.0.insert(name.to_string(), 2);
        formats
    }

    /// Writes an image tree (zdb's bytes, unit files) under `dir`; returns its id and MANIFEST.
    fn image_tree(dir: &Path, zdb: &[u8], units: &[(&str, &[u8])], formats: Formats) -> Installed {
        let mut files: Vec<(String, &[u8], Role, u32)> =
            vec![("var/zdbfs/bin/zdb".into(), zdb, Role::Binary, 0o755)];
        for (name, bytes) in units {
            files.push((
                format!("etc/systemd/system/{name}"),
                *bytes,
                Role::Unit,
                0o644,
            ));
        }
        let mut entries = vec![
            EntryInfo {
                path: "var/zdbfs".into(),
                kind: "dir".into(),
                mode: "0700".into(),
                size: None,
                sha256: None,
                role: Role::Dir,
            },
            EntryInfo {
                path: "var/zdbfs/bin".into(),
                kind: "dir".into(),
                mode: "0755".into(),
                size: None,
                sha256: None,
                role: Role::Dir,
            },
        ];
        for (path, bytes, role, mode) in &files {
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, bytes).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).unwrap();
            entries.push(EntryInfo {
                path: path.clone(),
                kind: "file".into(),
                mode: format!("{mode:04o}"),
                size: Some(bytes.len() as u64),
                sha256: Some(crate::image::hex(&sha2::Sha256::digest(bytes))),
                role: *role,
            });
        }
        let manifest = ImageManifest {
            schema: 1,
            image: ImageInfo {
                name: "qsfs".into(),
                version: String::from_utf8_lossy(zdb).into_owned(),
                arch: "x86_64".into(),
                qsfs_version: "0".into(),
                source_date_epoch: 0,
                build_time: String::new(),
                secrets: false,
            },
            formats,
            components: Vec::<ComponentInfo>::new(),
            ours: Vec::new(),
            entries,
        };
        let text = manifest.to_text().unwrap();
        std::fs::write(dir.join(layout::MANIFEST), &text).unwrap();
        Installed {
            id: version_id(&text, &manifest),
            manifest,
        }
    }

    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;

    /// A machine installed from image "v1" (with a data file), and image "v2" in its store.
    fn machine(v2_formats: Formats) -> (tempfile::TempDir, Store, Installed, Installed) {
        let root = tempfile::tempdir().unwrap();
        let v1 = image_tree(
            root.path(),
            b"v1",
            &[
                ("qsfs-zdb.service", b"zdb v1"),
                ("qsfs-old.service", b"old"),
            ],
            Formats::default(),
        );
        std::fs::create_dir_all(root.path().join("var/zdbfs/data/zdbfs-data")).unwrap();
        std::fs::write(root.path().join("var/zdbfs/data/zdbfs-data/d0"), b"data").unwrap();
        let store = Store::new(root.path());
        let staging = tempfile::tempdir().unwrap();
        let v2 = image_tree(
            staging.path(),
            b"v2",
            &[
                ("qsfs-zdb.service", b"zdb v2"),
                ("qsfs-new.service", b"new"),
            ],
            v2_formats,
        );
        std::fs::create_dir_all(store.dir()).unwrap();
        std::fs::rename(staging.path(), store.tree(&v2.id)).unwrap();
        (root, store, v1, v2)
    }

    fn live(root: &Path, path: &str) -> Option<Vec<u8>> {
        std::fs::read(root.join(path)).ok()
    }

    fn unit(root: &Path, name: &str) -> Option<Vec<u8>> {
        live(root, &format!("etc/systemd/system/{name}"))
    }

    #[test]
    fn a_healthy_upgrade_makes_the_new_version_live_and_keeps_the_old_one() {
        let (root, store, v1, v2) = machine(Formats::default());
        let mut m = Scripted::default();
        let outcome = upgrade(&store, &mut m, &v2, WATCH).unwrap();
        assert_eq!(outcome.event.action, Action::Upgraded);
        assert_eq!(outcome.exit_code(), crate::image::exit::OK);
        assert_eq!(m.calls, ["stop", "start"]);
        let r = root.path();
        assert_eq!(live(r, "var/zdbfs/bin/zdb").unwrap(), b"v2");
        assert_eq!(unit(r, "qsfs-zdb.service").unwrap(), b"zdb v2");
        assert_eq!(unit(r, "qsfs-new.service").unwrap(), b"new");
        assert_eq!(
            unit(r, "qsfs-old.service"),
            None,
            "a unit v2 does not ship is removed"
        );
        assert_eq!(live(r, "var/zdbfs/data/zdbfs-data/d0").unwrap(), b"data");
        let state = store.state().unwrap().unwrap();
        assert_eq!(state.current, v2.id);
        assert_eq!(state.previous.as_deref(), Some(v1.id.as_str()));
        assert_eq!(state.switching, None);
        assert_eq!(store.live().unwrap().0, v2.id);
        assert_eq!(m.journal.len(), 1);
    }

    #[test]
    fn an_upgrade_that_does_not_become_healthy_rolls_back_by_itself() {
        let (root, store, v1, v2) = machine(Formats::default());
        let mut m = Scripted {
            health: VecDeque::from(vec![
                Health::Unhealthy("qsfs-minio.service is failed".into());
                5
            ]),
            ..Scripted::default()
        };
        let outcome = upgrade(&store, &mut m, &v2, WATCH).unwrap();
        assert_eq!(outcome.event.action, Action::UpgradeRolledBack);
        assert_eq!(outcome.exit_code(), crate::image::exit::ROLLED_BACK);
        assert_eq!(outcome.healthy_after_rollback, Some(true));
        assert_eq!(
            outcome.event.reason.as_deref(),
            Some("qsfs-minio.service is failed")
        );
        // 10 s of watching every 3 s: 5 answers, then the old version's first is healthy.
        assert_eq!(m.calls, ["stop", "start", "stop", "start"]);
        let r = root.path();
        assert_eq!(live(r, "var/zdbfs/bin/zdb").unwrap(), b"v1");
        assert_eq!(unit(r, "qsfs-old.service").unwrap(), b"old");
        assert_eq!(unit(r, "qsfs-new.service"), None);
        assert_eq!(live(r, "var/zdbfs/data/zdbfs-data/d0").unwrap(), b"data");
        assert_eq!(store.live().unwrap().0, v1.id);
        let state = store.state().unwrap().unwrap();
        assert_eq!(
            (state.current.as_str(), state.previous),
            (v1.id.as_str(), None)
        );
        assert_eq!(
            state.history.last().unwrap().action,
            Action::UpgradeRolledBack
        );
        assert_eq!(
            m.journal[0].reason.as_deref(),
            Some("qsfs-minio.service is failed")
        );
        assert!(
            !store.tree(&v2.id).exists(),
            "the failed version is not kept"
        );
    }

    #[test]
    fn a_rollback_returns_to_the_previous_version() {
        let (root, store, v1, v2) = machine(Formats::default());
        upgrade(&store, &mut Scripted::default(), &v2, WATCH).unwrap();
        let mut m = Scripted::default();
        let outcome = rollback(&store, &mut m, WATCH).unwrap();
        assert_eq!(outcome.event.action, Action::RolledBack);
        assert_eq!(
            (outcome.event.from.as_str(), outcome.event.to.as_str()),
            (v2.id.as_str(), v1.id.as_str())
        );
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"v1");
        let state = store.state().unwrap().unwrap();
        assert_eq!(state.current, v1.id);
        assert_eq!(state.previous.as_deref(), Some(v2.id.as_str()));
    }

    #[test]
    fn a_rollback_to_binaries_that_cannot_read_the_formats_is_refused() {
        let (root, store, _, v2) = machine(newer(crate::image::tree::SPOOL_JOB));
        let mut m = Scripted::default();
        upgrade(&store, &mut m, &v2, WATCH).unwrap();
        let mut m = Scripted::default();
        let err = rollback(&store, &mut m, WATCH).unwrap_err();
        assert_eq!(err.exit_code(), crate::image::exit::SWITCH_REFUSED);
        assert!(
            err.to_string()
                .contains("spool_job of format 2 (it reads up to 1)"),
            "{err}"
        );
        assert!(m.calls.is_empty(), "nothing was stopped");
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"v2");
    }

    #[test]
    fn an_unhealthy_upgrade_that_cannot_be_rolled_back_stays_and_says_so() {
        let (root, store, _, v2) = machine(newer(crate::image::tree::MONITOR_STATE));
        let mut m = Scripted {
            health: VecDeque::from(vec![Health::Unhealthy("s3 failed".into()); 5]),
            ..Scripted::default()
        };
        let outcome = upgrade(&store, &mut m, &v2, WATCH).unwrap();
        assert_eq!(outcome.event.action, Action::UpgradeUnhealthy);
        assert_eq!(outcome.exit_code(), crate::image::exit::UNHEALTHY);
        assert_eq!(m.calls, ["stop", "start"]);
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"v2");
    }

    /// A switch from `from` to `to` cut short after some of `to`'s files were made live
    /// (`manifest_too`: also its MANIFEST, which is copied last).
    fn cut_short(
        store: &Store,
        root: &Path,
        from: &str,
        to: &str,
        recover_to: &str,
        manifest_too: bool,
    ) {
        let mut state = State::new(from);
        state.switching = Some(Switch {
            from: from.to_string(),
            to: to.to_string(),
            recover_to: recover_to.to_string(),
            started_unix_ms: 0,
        });
        store.write_state(&state).unwrap();
        let mut copied = vec!["var/zdbfs/bin/zdb", "etc/systemd/system/qsfs-zdb.service"];
        // The file only `to` ships, if it has it.
        for only in [
            "etc/systemd/system/qsfs-new.service",
            "etc/systemd/system/qsfs-old.service",
        ] {
            if store.tree(to).join(only).exists() {
                copied.push(only);
            }
        }
        if manifest_too {
            copied.push(layout::MANIFEST);
        }
        for path in copied {
            std::fs::copy(store.tree(to).join(path), root.join(path)).unwrap();
        }
    }

    #[test]
    fn a_switch_cut_short_is_finished_by_rollback_and_blocks_upgrades() {
        for manifest_too in [false, true] {
            let (root, store, v1, v2) = machine(Formats::default());
            store.capture_live().unwrap();
            cut_short(&store, root.path(), &v1.id, &v2.id, &v1.id, manifest_too);
            let err = upgrade(&store, &mut Scripted::default(), &v2, WATCH).unwrap_err();
            assert!(err.to_string().contains("did not finish"), "{err}");
            assert_eq!(err.exit_code(), crate::image::exit::SWITCH_REFUSED);
            let outcome = rollback(&store, &mut Scripted::default(), WATCH).unwrap();
            assert_eq!(outcome.current, v1.id);
            let r = root.path();
            assert_eq!(live(r, "var/zdbfs/bin/zdb").unwrap(), b"v1");
            assert_eq!(unit(r, "qsfs-zdb.service").unwrap(), b"zdb v1");
            assert_eq!(unit(r, "qsfs-old.service").unwrap(), b"old");
            assert_eq!(
                unit(r, "qsfs-new.service"),
                None,
                "manifest_too {manifest_too}"
            );
            assert_eq!(store.live().unwrap().0, v1.id);
            assert_eq!(store.state().unwrap().unwrap().switching, None);
        }
    }

    #[test]
    fn an_automatic_rollback_cut_short_is_finished_towards_the_old_version() {
        let (root, store, v1, v2) = machine(Formats::default());
        upgrade(&store, &mut Scripted::default(), &v2, WATCH).unwrap();
        // v2 did not become healthy; going back to v1 was cut short.
        cut_short(&store, root.path(), &v2.id, &v1.id, &v1.id, false);
        let outcome = rollback(&store, &mut Scripted::default(), WATCH).unwrap();
        assert_eq!(outcome.current, v1.id);
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"v1");
        assert_eq!(unit(root.path(), "qsfs-new.service"), None);
    }

    #[test]
    fn a_switch_cut_short_to_newer_formats_is_finished_forward() {
        let (root, store, v1, v2) = machine(newer(crate::image::tree::SPOOL_JOB));
        store.capture_live().unwrap();
        cut_short(&store, root.path(), &v1.id, &v2.id, &v1.id, true);
        let outcome = rollback(&store, &mut Scripted::default(), WATCH).unwrap();
        assert_eq!(
            outcome.current, v2.id,
            "v1 could not read what v2 may have written"
        );
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"v2");
        assert_eq!(unit(root.path(), "qsfs-old.service"), None);
    }

    #[test]
    fn the_watch_wants_health_that_lasts() {
        let (_root, store, _, v2) = machine(Formats::default());
        let watch = Watch {
            within: Duration::from_secs(30),
            settle: Duration::from_secs(6),
            every: Duration::from_secs(3),
        };
        // Healthy at once, then a unit fails: not healthy yet; then healthy for 6 s.
        let unhealthy = Health::Unhealthy("qsfs-zdb.service is failed".into());
        let mut m = Scripted {
            health: VecDeque::from(vec![Health::Healthy, unhealthy.clone(), Health::Healthy]),
            ..Scripted::default()
        };
        let outcome = upgrade(&store, &mut m, &v2, watch).unwrap();
        assert_eq!(outcome.event.action, Action::Upgraded);
        assert_eq!(m.now, 4 * 3000, "healthy at 6, 9 and 12 s");
        // Healthy only once, at the end of the watch: not enough.
        let (_root, store, _, v2) = machine(Formats::default());
        let mut m = Scripted {
            health: VecDeque::from(vec![unhealthy; 11]),
            ..Scripted::default()
        };
        let outcome = upgrade(&store, &mut m, &v2, watch).unwrap();
        assert_eq!(outcome.event.action, Action::UpgradeRolledBack);
    }

    #[test]
    fn a_live_tree_changed_by_hand_is_not_upgraded() {
        let (root, store, _, v2) = machine(Formats::default());
        std::fs::write(root.path().join("var/zdbfs/bin/zdb"), b"patched").unwrap();
        let mut m = Scripted::default();
        let err = upgrade(&store, &mut m, &v2, WATCH).unwrap_err();
        assert_eq!(err.exit_code(), crate::image::exit::SWITCH_REFUSED);
        assert!(err.to_string().contains("var/zdbfs/bin/zdb"), "{err}");
        assert!(m.calls.is_empty());
        assert_eq!(live(root.path(), "var/zdbfs/bin/zdb").unwrap(), b"patched");
    }

    #[test]
    fn one_switch_at_a_time_and_leftovers_are_removed() {
        let (_root, store, _, _) = machine(Formats::default());
        let leftover = store.dir().join(".unpack-1-2");
        std::fs::create_dir_all(leftover.join("var")).unwrap();
        let held = store.lock().unwrap();
        assert!(!leftover.exists(), "a killed upgrade's staging is removed");
        let err = store.lock().unwrap_err();
        assert_eq!(err.exit_code(), crate::image::exit::SWITCH_REFUSED);
        assert!(
            err.to_string().contains("another upgrade or rollback"),
            "{err}"
        );
        drop(held);
        store.lock().unwrap();
    }

    #[test]
    fn a_switch_whose_files_cannot_be_written_puts_the_old_ones_back_and_starts_them() {
        let (root, store, v1, v2) = machine(Formats::default());
        // A file of v2's tree is gone: activating it fails half-way, after its units.
        std::fs::remove_file(store.tree(&v2.id).join("var/zdbfs/bin/zdb")).unwrap();
        let mut m = Scripted::default();
        let err = upgrade(&store, &mut m, &v2, WATCH).unwrap_err();
        assert!(err.to_string().contains("bin/zdb"), "{err}");
        assert_eq!(unit(root.path(), "qsfs-new.service"), None);
        assert_eq!(unit(root.path(), "qsfs-old.service").unwrap(), b"old");
        assert_eq!(
            m.calls,
            ["stop", "start"],
            "the old version is started again"
        );
        let r = root.path();
        assert_eq!(live(r, "var/zdbfs/bin/zdb").unwrap(), b"v1");
        assert_eq!(unit(r, "qsfs-zdb.service").unwrap(), b"zdb v1");
        assert_eq!(store.live().unwrap().0, v1.id);
        let state = store.state().unwrap().unwrap();
        assert_eq!((state.current, state.switching), (v1.id, None));
    }

    #[test]
    fn nothing_to_roll_back_to_is_refused() {
        let (_root, store, _, _) = machine(Formats::default());
        let err = rollback(&store, &mut Scripted::default(), WATCH).unwrap_err();
        assert_eq!(err.exit_code(), crate::image::exit::SWITCH_REFUSED);
        assert!(
            err.to_string().contains("no upgrade was ever made"),
            "{err}"
        );
    }

    #[test]
    fn status_lists_the_versions() {
        let (root, store, v1, v2) = machine(Formats::default());
        upgrade(&store, &mut Scripted::default(), &v2, WATCH).unwrap();
        let status = status(root.path()).unwrap();
        assert_eq!(status.live, v2.id);
        let text = status.to_text();
        assert!(text.contains(&format!("current  {}", v2.id)), "{text}");
        assert!(text.contains(&format!("previous {}", v1.id)), "{text}");
        assert!(text.contains("last: upgraded"), "{text}");
        let _: PathBuf = store.dir();
    }
}
