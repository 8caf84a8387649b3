//! `qsfs-image`: the deterministic appliance tarball of `/var/zdbfs`.
