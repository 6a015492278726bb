//! The two kinds of image we merge, as one table, like systemd's `image_class_info`: system
//! extensions (sysexts) onto /usr and /opt, and configuration extensions (confexts) onto /etc.
//! Every step takes the class and asks it; nothing else names a class fact.

use std::fmt;

use crate::verify::gpt::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Sysext,
    Confext,
}

/// A directory of the root that extensions are merged onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hierarchy {
    Usr,
    Opt,
    Etc,
}

impl Hierarchy {
    pub const ALL: [Hierarchy; 3] = [Hierarchy::Usr, Hierarchy::Opt, Hierarchy::Etc];

    /// Relative to the root: `usr`.
    pub fn dir(self) -> &'static str {
        match self {
            Hierarchy::Usr => "usr",
            Hierarchy::Opt => "opt",
            Hierarchy::Etc => "etc",
        }
    }

    /// As the booted system names it: `/usr`.
    pub fn path(self) -> &'static str {
        match self {
            Hierarchy::Usr => "/usr",
            Hierarchy::Opt => "/opt",
            Hierarchy::Etc => "/etc",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Hierarchy::Usr | Hierarchy::Opt => Class::Sysext,
            Hierarchy::Etc => Class::Confext,
        }
    }
}

impl Class {
    /// In the order we merge: sysexts first, so that confexts a sysext ships in /usr/lib/confexts
    /// are found, and are identified through the /usr the booted system will see.
    pub const ALL: [Class; 2] = [Class::Sysext, Class::Confext];

    /// `sysext`, `confext`: systemd's short identifier.
    pub fn name(self) -> &'static str {
        match self {
            Class::Sysext => "sysext",
            Class::Confext => "confext",
        }
    }

    /// Where images are searched, relative to the root, in systemd's order (discover-image.c): the
    /// first entry of a name wins. No /etc/confexts: an image inside the /etc it extends would
    /// recurse; /usr is fine for confexts, which never overlay it.
    pub fn search_paths(self) -> &'static [&'static str] {
        match self {
            Class::Sysext => &["/etc/extensions", "/run/extensions", "/var/lib/extensions"],
            Class::Confext => &["/run/confexts", "/var/lib/confexts", "/usr/local/lib/confexts", "/usr/lib/confexts"],
        }
    }

    /// The optional name suffix before `.raw` (`podman.sysext.raw` is named `podman`).
    pub fn suffix(self) -> &'static str {
        match self {
            Class::Sysext => ".sysext",
            Class::Confext => ".confext",
        }
    }

    /// Where an image carries its release files (os-util.c).
    pub fn release_dir(self) -> &'static str {
        match self {
            Class::Sysext => "usr/lib/extension-release.d",
            Class::Confext => "etc/extension-release.d",
        }
    }

    pub fn scope_key(self) -> &'static str {
        match self {
            Class::Sysext => "SYSEXT_SCOPE",
            Class::Confext => "CONFEXT_SCOPE",
        }
    }

    /// The API level key, in the image's release file and the host's os-release.
    pub fn level_key(self) -> &'static str {
        match self {
            Class::Sysext => "SYSEXT_LEVEL",
            Class::Confext => "CONFEXT_LEVEL",
        }
    }

    /// The metadata directory a merged hierarchy carries.
    pub fn meta_dir(self) -> &'static str {
        match self {
            Class::Sysext => ".systemd-sysext",
            Class::Confext => ".systemd-confext",
        }
    }

    /// The file in the metadata directory that lists the merged names.
    pub fn list_file(self) -> &'static str {
        match self {
            Class::Sysext => "extensions",
            Class::Confext => "confexts",
        }
    }

    /// The overlay's mount source, as systemd names it.
    pub fn mount_source(self) -> &'static str {
        self.name()
    }

    pub fn hierarchies(self) -> &'static [Hierarchy] {
        match self {
            Class::Sysext => &[Hierarchy::Usr, Hierarchy::Opt],
            Class::Confext => &[Hierarchy::Etc],
        }
    }

    /// Our kernel command line switch: `rd.sysext=`, `rd.confext=`.
    pub fn switch(self) -> &'static str {
        match self {
            Class::Sysext => "rd.sysext",
            Class::Confext => "rd.confext",
        }
    }

    /// Upstream's switches, which can only turn merging off.
    pub fn upstream_switches(self) -> [&'static str; 2] {
        match self {
            Class::Sysext => ["rd.systemd.sysext", "systemd.sysext"],
            Class::Confext => ["rd.systemd.confext", "systemd.confext"],
        }
    }

    /// The DDI data partitions systemd's default image policy honours for the class
    /// (image-policy.c): a sysext may be a root or a usr partition, a confext only a root one.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Class::Sysext => &[Role::Root, Role::Usr],
            Class::Confext => &[Role::Root],
        }
    }

    /// systemd's tool for the class, and the unit the booted system runs it in.
    pub fn tool(self) -> &'static str {
        match self {
            Class::Sysext => "systemd-sysext",
            Class::Confext => "systemd-confext",
        }
    }

    /// What the images are called in messages.
    pub fn images(self) -> &'static str {
        match self {
            Class::Sysext => "extension images",
            Class::Confext => "configuration extension images",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hierarchy_belongs_to_the_class_that_lists_it() {
        for c in Class::ALL {
            assert!(c.hierarchies().iter().all(|h| h.class() == c), "{c}");
        }
        assert_eq!(Class::ALL.iter().map(|c| c.hierarchies().len()).sum::<usize>(), Hierarchy::ALL.len());
        assert_eq!(Class::parse("confext"), Some(Class::Confext));
        assert_eq!(Class::parse("portable"), None);
    }

    #[test]
    fn confexts_are_never_searched_inside_the_etc_they_extend() {
        assert!(Class::Confext.search_paths().iter().all(|p| !p.starts_with("/etc/")));
        assert!(Class::Sysext.search_paths().iter().all(|p| !p.starts_with("/usr/")));
    }
}
