//! `myelin_format::validate::validate_event` against prost: an appended event is stored only
//! when the validator accepts it, and every reader decodes it with prost (or protobuf-java), so
//! the two must agree on every input. Panics when they do not.

use myelin_proto::grpc::event::Event;
use prost::Message;

pub fn run(data: &[u8]) {
    let ours = myelin_format::validate::validate_event(data);
    let prost = Event::decode(data);
    assert_eq!(
        ours.is_ok(),
        prost.is_ok(),
        "validator says {ours:?}, prost says {:?}",
        prost.as_ref().map(|_| ())
    );
}
