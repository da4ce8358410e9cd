//! gregor: a Kafka-protocol message broker.
mod log;
fn main() {}
