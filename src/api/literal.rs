//! Literal `type` fields of objects that appear both alone and in unions
//! (`{type: "agent", …}`): a unit type that writes its one string and
//! accepts nothing else, so an untagged union tells its members apart.
//!
//! Only for such objects: a union whose members never stand alone is an
//! internally tagged enum instead.

use std::borrow::Cow;

use serde::de::{Error, Unexpected};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! literal {
    ($(#[$doc:meta])* $name:ident = $value:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            pub const VALUE: &'static str = $value;
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = Cow::<str>::deserialize(deserializer)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(D::Error::invalid_value(Unexpected::Str(&s), &$value))
                }
            }
        }
    };
}

literal!(
    /// `"agent"`: agent references and agent snapshots.
    AgentType = "agent"
);
literal!(
    /// `"advisor"`: a coordinator's advisor entry.
    AdvisorType = "advisor"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_take_only_their_value() {
        assert_eq!(serde_json::to_string(&AgentType).unwrap(), "\"agent\"");
        assert!(serde_json::from_str::<AgentType>("\"agent\"").is_ok());
        assert!(serde_json::from_str::<AgentType>("\"advisor\"").is_err());
        assert!(serde_json::from_str::<AdvisorType>("\"advisor\"").is_ok());
    }
}
