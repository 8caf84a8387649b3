//! `zstor_monitor`: durable, verified uploads of sealed zdb files; cache eviction; backend
//! health; repair.

pub mod status;
