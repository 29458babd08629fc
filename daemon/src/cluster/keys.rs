//! Where things are in Redis: every key pacer uses, under the configured prefix. A budget's keys
//! share a hash tag (`{owner/class}`), as the scripts touching them together would need.

use pacer_protocol::message::BudgetId;

/// Where things are in Redis, under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn tag(id: &BudgetId) -> String {
        format!("{}/{}", id.owner, id.model_class)
    }

    pub fn budget(&self, id: &BudgetId) -> String {
        format!("{}:b:{{{}}}", self.prefix, Self::tag(id))
    }

    pub fn leases(&self, id: &BudgetId) -> String {
        format!("{}:l:{{{}}}", self.prefix, Self::tag(id))
    }

    /// A budget's turns: the daemons refused capacity, in order, and when each is due back.
    pub fn turns(&self, id: &BudgetId) -> (String, String) {
        let tag = Self::tag(id);
        (
            format!("{}:w:{{{tag}}}", self.prefix),
            format!("{}:wx:{{{tag}}}", self.prefix),
        )
    }

    pub fn overload(&self, class: &str) -> String {
        format!("{}:o:{class}", self.prefix)
    }

    pub fn lockout(&self, owner: &str, class: Option<&str>) -> String {
        match class {
            Some(class) => format!("{}:x:{owner}:{class}", self.prefix),
            None => format!("{}:x:{owner}", self.prefix),
        }
    }

    /// The subscription windows last reported per owner (each a message as published).
    pub fn windows(&self) -> String {
        format!("{}:windows", self.prefix)
    }

    pub fn links(&self) -> String {
        format!("{}:links", self.prefix)
    }

    pub fn daemons(&self) -> String {
        format!("{}:daemons", self.prefix)
    }

    pub fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
}
