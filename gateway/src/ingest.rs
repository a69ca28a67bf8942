//! Where events come from a registry's own notifications. Each registry's
//! format is read by its own module into `changes::Notification`s; the
//! store records them (de-duplicated, many requests to one durable commit)
//! and the rules of `changes` decide what events they make.

pub mod distribution;
