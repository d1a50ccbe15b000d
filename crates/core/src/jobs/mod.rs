//! The jobs framework's pure half (Chronos and Metronome): when a job runs (`schedule`:
//! ISO 8601 repeating intervals and cron, in a time zone), which dependent jobs may run and
//! which parents are refused (`dag`), and the run policy's decisions (`policy`:
//! concurrency, late starts, retries).

pub mod dag;
pub mod policy;
pub mod schedule;
