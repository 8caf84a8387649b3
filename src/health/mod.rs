//! `qsfs-health`: probes of every part of the appliance, readiness gates, and remediation.
