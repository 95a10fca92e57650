//! Times at the precision the API stores them. A `metav1.Time` serialises to whole
//! seconds, so a time kept with nanoseconds never equals its own cached copy, and a
//! compare-before-write that holds one would write on every reconcile.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Now, truncated to the second, as the API server will store it.
pub fn now() -> Time {
    at_api_precision(Timestamp::now())
}

/// `t` truncated to the second.
pub fn at_api_precision(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).expect("a whole second of a valid time is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_survives_a_round_trip_through_json() {
        let t = now();
        let back: Time = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn sub_second_parts_are_dropped() {
        let t = Timestamp::from_second(100).unwrap() + std::time::Duration::from_millis(999);
        assert_eq!(
            at_api_precision(t),
            Time(Timestamp::from_second(100).unwrap())
        );
    }
}
