//! The scenarios, one file per group. Each drives servers over keep-alive connections for a
//! bounded time and count (helpers in `measure.rs`), and writes its figures as Markdown, every
//! one beside a baseline of the same run (tables rendered by `report.rs`).

mod clients;
mod contended;
mod durability;
mod etcd;
mod held;
mod resources;
mod security;
mod sharing;
mod throughput;
mod waiting;
mod watching;

pub use clients::language_clients;
pub use contended::contended;
pub use durability::durability;
pub use etcd::{etcd, raw_cycles, v3lock_contention, v3lock_cycles};
pub use held::million;
pub use resources::at_the_caps;
pub use security::security;
pub use sharing::{permits, sharing};
pub use throughput::{generator_ceiling, redis, uncontended};
pub use waiting::{expiries, parked};
pub use watching::watching;
