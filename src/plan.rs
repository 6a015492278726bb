//! Step 5: the decision. One `Plan` per class from plain data: what was found, what each image
//! holds, the host's release, the state of the class's hierarchies, the command line and, for
//! confexts, the mutable mode and what the root's /etc is. No syscalls here, so every rule is
//! unit-tested without root.

use std::time::Duration;

use crate::class::Class;
pub use crate::class::Hierarchy;
use crate::cmdline::{Cmdline, Policy, Selection};
use crate::discover::Origin;
use crate::mutable::{self, Choice, EtcFacts, Layout, Source};
use crate::validate::{self, Conflict, Host, ReleaseFile};
use crate::verify::{Kind, Signature, Trust};
use crate::version;

/// What an image holds, read from its mounted tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub release_files: Vec<ReleaseFile>,
    pub has_os_release: bool,
    /// Hierarchies for which the image has a non-empty directory.
    pub content: Vec<Hierarchy>,
    pub conflicts: Vec<Conflict>,
    /// Confexts: the sensitive files of /etc it has an entry for (`/etc/fstab`), each with
    /// whether the base has one too.
    pub sensitive: Vec<(String, bool)>,
    /// Confexts: what it has at etc/machine-id.
    pub machine_id: Option<mutable::Entry>,
}

/// One image as discovery and inspection saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    pub name: String,
    /// Where it was found, inside the root: `/etc/extensions/podman.raw`.
    pub path: String,
    /// Where a symlink led, inside the root.
    pub target: Option<String>,
    pub size: u64,
    /// The kind, or why the file cannot be an image at all.
    pub kind: Result<Kind, String>,
    /// What protects it, or why its protection is broken; `None` when not examined.
    pub trust: Option<Result<Trust, String>>,
    /// What the image holds; `None` when it was not opened (not needed, or not selected).
    pub facts: Option<Result<Facts, String>>,
    /// How the booted system will recognise it; `None` for entries that are not images.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HierarchyState {
    /// An existing directory we can merge onto.
    Ready,
    /// Does not exist: created if an extension needs it, as systemd-sysext does.
    Missing,
    /// Already carries a merge (ours or systemd's).
    Merged { extensions: Vec<String> },
    /// Cannot be merged onto, for the given reason.
    Unusable { reason: String },
}

/// For confexts: the mutable mode and what the root's /etc is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcInputs {
    pub choice: Choice,
    pub facts: EtcFacts,
}

pub struct Inputs {
    pub class: Class,
    pub cmdline: Cmdline,
    /// The policy in force: the command line's, or the default for the installed certificates.
    pub policy: Policy,
    pub host: Result<Host, String>,
    pub hierarchies: Vec<(Hierarchy, HierarchyState)>,
    pub images: Vec<ImageInput>,
    pub etc: Option<EtcInputs>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Merge,
    Skip { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub path: String,
    pub target: Option<String>,
    pub kind: Option<Kind>,
    pub size: u64,
    pub content: Vec<Hierarchy>,
    pub action: Action,
    /// What protects a merged image, for its log line.
    pub trust: Option<String>,
    /// Merged, but with something the admin should know (e.g. not signed).
    pub warning: Option<String>,
    /// The dm-verity root hash in hex, when it was examined and has one.
    pub root_hash: Option<String>,
    pub origin: Option<Origin>,
    /// Admitted, but it could not be mounted or layered: a failure here, not a rule, so the
    /// booted system may try again.
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HierarchyPlan {
    pub hierarchy: Hierarchy,
    pub state: HierarchyState,
    /// Extension names, top layer first; the host directory goes below them.
    pub layers: Vec<String>,
    /// /etc: the overlay the mutable mode makes (read-only for sysexts, always).
    pub layout: Option<Layout>,
    /// Not merged as a whole this boot, and why (a mutable mode that cannot be honoured here).
    pub skipped: Option<String>,
}

/// What became of a hierarchy once the plan was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `layers` top first; `via` names how the kernel was given them.
    Merged {
        layers: Vec<String>,
        took: Duration,
        via: &'static str,
    },
    AlreadyMerged {
        extensions: Vec<String>,
    },
    Nothing,
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub class: Class,
    pub images: Vec<Decision>,
    pub hierarchies: Vec<HierarchyPlan>,
    /// Things worth a log line that belong to no single image.
    pub notes: Vec<String>,
}

/// Whether the command line lets us look at this image at all. The driver uses it to avoid
/// opening images that will be skipped anyway.
pub fn selected(cmdline: &Cmdline, class: Class, name: &str) -> bool {
    match cmdline.selection(class) {
        Selection::Disabled { .. } => false,
        Selection::All => true,
        Selection::Only(names) => names.iter().any(|n| n == name),
    }
}

/// Whether any hierarchy already carries a merge; then we merge nothing (never a second overlay).
pub fn already_merged(hierarchies: &[(Hierarchy, HierarchyState)]) -> Option<(Hierarchy, &[String])> {
    hierarchies.iter().find_map(|(h, s)| match s {
        HierarchyState::Merged { extensions } => Some((*h, extensions.as_slice())),
        _ => None,
    })
}

/// The default policy: strict as soon as any certificate is installed, usable or not (fail
/// closed: a certificate that cannot be read must not relax the policy).
pub fn default_policy(certificates_installed: bool) -> Policy {
    if certificates_installed {
        Policy::Signed
    } else {
        Policy::Any
    }
}

/// Whether the policy lets an image with this protection be mounted at all, and what to warn
/// about if it does. Checked before the image is opened, so a refused image never reaches the
/// kernel's file system code.
pub fn admit(policy: Policy, trust: &Trust) -> Result<Option<String>, String> {
    let p = policy.as_str();
    match (policy, &trust.root_hash, &trust.signature) {
        (_, Some(_), Signature::Valid { .. }) => Ok(None),
        (Policy::Signed, _, Signature::Invalid { reason }) => Err(format!("{reason} (policy {p})")),
        (Policy::Signed, _, Signature::Unchecked) => {
            Err(format!("its signature cannot be checked: no usable trusted certificate is installed (policy {p})"))
        }
        (Policy::Signed, Some(_), _) => Err(format!("unsigned: it has dm-verity data but no signature (policy {p})")),
        (Policy::Signed, None, _) => Err(format!("unsigned: it has no dm-verity data and no signature (policy {p})")),
        (Policy::Verity, None, _) => Err(format!("has no dm-verity data (policy {p})")),
        (_, _, Signature::Invalid { reason }) => {
            Ok(Some(format!("signature not accepted ({reason}); merged because the policy is {p}")))
        }
        (_, Some(_), Signature::Unchecked) => {
            Ok(Some("signature not checked: no usable trusted certificate is installed".into()))
        }
        (Policy::Verity, Some(_), _) => Ok(None),
        (_, _, _) => Ok(Some(format!("not signed: merged because the policy is {p}"))),
    }
}

/// What a confext's entry at a sensitive path of /etc does, for its warning.
fn sensitive_warning(path: &str, in_base: bool) -> String {
    let what = if in_base { format!("replaces the base's {path}") } else { format!("adds {path}") };
    let effect = match path {
        "/etc/fstab" => ": the initrd has mounted by the base's already; it governs the booted system's mounts",
        "/etc/os-release" => ": the booted systemd-sysext matches extensions against it, not against the base's",
        "/etc/machine-id" => ": PID 1 takes the machine ID from it",
        "/etc/systemd/confext.conf" | "/etc/systemd/confext.conf.d" => {
            ": the booted systemd-confext reads it (its Mutable= too); this merge read the base's"
        }
        "/etc/extensions" | "/etc/systemd/sysext.conf" | "/etc/systemd/sysext.conf.d" => {
            ": only the booted systemd-sysext sees it (the initrd merged sysexts before confexts)"
        }
        _ => "",
    };
    format!("{what}{effect}")
}

/// Sysexts: a clash with the base refuses the image. Confexts: systemd's rules alone decide
/// (configuration replaces configuration), so clashes and sensitive files are only named.
fn content_rules(class: Class, facts: &Facts) -> Result<Vec<String>, String> {
    let more = |n: usize| if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() };
    let mut warnings = Vec::new();
    if let Some(first) = facts.conflicts.first() {
        let what = format!("{}{}", validate::describe(first), more(facts.conflicts.len()));
        match class {
            Class::Sysext => return Err(what),
            Class::Confext => warnings.push(what.replace(" (sysext-bakery#131)", "")),
        }
    }
    warnings.extend(facts.sensitive.iter().map(|(p, in_base)| sensitive_warning(p, *in_base)));
    Ok(warnings)
}

fn decide(inputs: &Inputs, image: &ImageInput) -> Result<(Vec<Hierarchy>, Option<String>), String> {
    let class = inputs.class;
    let selection = inputs.cmdline.selection(class);
    if let Selection::Disabled { by } = selection {
        return Err(format!("merging is disabled by {by}"));
    }
    if let Some((h, names)) = already_merged(&inputs.hierarchies) {
        return Err(if names.contains(&image.name) {
            format!("already merged into {}", h.path())
        } else {
            format!("{} is already merged ({}); merging again would stack a second overlay", h.path(), names.join(", "))
        });
    }
    if let Selection::Only(names) = selection {
        if !names.contains(&image.name) {
            return Err(format!("not listed in {}={}", class.switch(), names.join(",")));
        }
    }
    image.kind.clone()?;
    let policy_warning = match &image.trust {
        Some(t) => admit(inputs.policy, t.as_ref()?)?,
        None => return Err("was not examined".into()),
    };
    let facts = match (&image.facts, &image.trust) {
        (Some(Ok(f)), _) => f.clone(),
        // Say that the checks passed: the failure is then the machine's (no dm-verity, a damaged block).
        (Some(Err(e)), Some(Ok(t))) if t.root_hash.is_some() => {
            return Err(format!("cannot be mounted after passing its checks ({}): {e}", t.describe()))
        }
        (Some(Err(e)), _) => return Err(e.clone()),
        (None, _) => return Err("was not opened".into()),
    };
    let host = inputs.host.as_ref().map_err(|e| format!("cannot check against the root: {e}"))?;
    let file = validate::pick_release(&image.name, class, &facts.release_files)?;
    let info = validate::read_release(file)?;
    validate::release_matches(&info, host, "system", class)?;
    if facts.has_os_release {
        return Err("contains usr/lib/os-release, which only the base OS may carry".into());
    }
    let mut warnings: Vec<String> = policy_warning.into_iter().collect();
    warnings.extend(content_rules(class, &facts)?);
    if facts.content.is_empty() {
        let dirs: Vec<&str> = class.hierarchies().iter().map(|h| h.path()).collect();
        return Err(format!("has no files under {}", dirs.join(" or ")));
    }
    for h in &facts.content {
        if let Some((_, HierarchyState::Unusable { reason })) = inputs.hierarchies.iter().find(|(x, _)| x == h) {
            return Err(format!("needs {}, which cannot be merged onto: {reason}", h.path()));
        }
    }
    Ok((facts.content, (!warnings.is_empty()).then(|| warnings.join("; "))))
}

/// The /etc overlay for the mutable mode, and whether it may be made at all: a mode systemd
/// could not honour fails here as it fails there; a read-only /etc nobody chose is said in one
/// line, and skipped when PID 1 would find no machine ID in it. Returns the line to log, if any.
fn etc_layout(inputs: &Inputs, etc: &EtcInputs, hp: &mut HierarchyPlan) -> Option<String> {
    let layout = match mutable::layout(&etc.choice, &etc.facts) {
        Ok(l) => l,
        Err(reason) => {
            hp.skipped = Some(reason);
            return None;
        }
    };
    let mode = &etc.choice;
    let mut note = None;
    if layout.read_only() {
        let machine_id_of = |name: &String| {
            inputs.images.iter().find(|i| &i.name == name).and_then(|i| match &i.facts {
                Some(Ok(f)) => f.machine_id,
                _ => None,
            })
        };
        let images: Vec<_> = hp.layers.iter().map(machine_id_of).collect();
        let machine_id = mutable::merged_machine_id(&layout, &etc.facts, &images);
        let consequence = mutable::read_only_consequence(machine_id);
        match (&mode.source, machine_id) {
            (Source::Default, None) => {
                hp.skipped = Some(format!(
                    "mutable mode no, the default, would leave /etc read-only and without /etc/machine-id, and {consequence}; \
                     so no confext is merged this boot. To merge them: {}, or give /etc a machine-id",
                    mutable::HOW_TO_CHOOSE
                ));
                return None;
            }
            (Source::Default, _) => {
                note = Some(format!(
                    "/etc will be read-only: mutable mode no is systemd's default, nobody chose it; {consequence}. \
                     To choose a mode: {}",
                    mutable::HOW_TO_CHOOSE
                ))
            }
            (source, None) => {
                note = Some(format!(
                    "/etc will be read-only (mutable mode {} from {source}) and has no /etc/machine-id: {consequence}; \
                     merged as chosen",
                    mode.mode
                ))
            }
            _ => {}
        }
    }
    hp.layout = Some(layout);
    note
}

pub fn build(inputs: &Inputs) -> Plan {
    let mut images: Vec<Decision> = inputs
        .images
        .iter()
        .map(|image| {
            let (action, content, warning) = match decide(inputs, image) {
                Ok((content, warning)) => (Action::Merge, content, warning),
                Err(reason) => (Action::Skip { reason }, Vec::new(), None),
            };
            let trust = match (&action, &image.trust) {
                (Action::Merge, Some(Ok(t))) => Some(t.describe()),
                _ => None,
            };
            Decision {
                name: image.name.clone(),
                path: image.path.clone(),
                target: image.target.clone(),
                kind: image.kind.clone().ok(),
                size: image.size,
                content,
                trust,
                warning,
                root_hash: image.trust.as_ref().and_then(|t| t.as_ref().ok()).and_then(|t| t.root_hash.clone()),
                origin: image.origin.clone(),
                failed: action != Action::Merge && matches!(image.facts, Some(Err(_))),
                action,
            }
        })
        .collect();
    images.sort_by(|a, b| version::compare(&a.name, &b.name).then_with(|| a.path.cmp(&b.path)));

    let mut hierarchies: Vec<HierarchyPlan> = inputs
        .hierarchies
        .iter()
        .map(|(h, state)| HierarchyPlan {
            hierarchy: *h,
            state: state.clone(),
            layers: images
                .iter()
                .rev()
                .filter(|d| d.action == Action::Merge && d.content.contains(h))
                .map(|d| d.name.clone())
                .collect(),
            layout: None,
            skipped: None,
        })
        .collect();

    let mut notes = Vec::new();
    if let Selection::Only(names) = inputs.cmdline.selection(inputs.class) {
        for n in names.iter().filter(|n| !inputs.images.iter().any(|i| &i.name == *n)) {
            notes.push(format!("{} names {n}, but no image of that name was found", inputs.class.switch()));
        }
    }
    if let Err(e) = &inputs.host {
        notes.push(format!("cannot read the root's os-release: {e}"));
    }
    let mut plan = Plan { class: inputs.class, images, hierarchies: Vec::new(), notes };
    for hp in &mut hierarchies {
        if let Some(etc) = inputs.etc.as_ref().filter(|_| hp.hierarchy == Hierarchy::Etc && !hp.layers.is_empty()) {
            plan.notes.extend(etc_layout(inputs, etc, hp));
        }
    }
    plan.hierarchies = hierarchies;
    for hp in plan.hierarchies.clone().iter().filter(|hp| hp.skipped.is_some()) {
        let reason = format!("{} is not merged: {}", hp.hierarchy.path(), hp.skipped.as_deref().unwrap_or_default());
        for name in &hp.layers {
            plan.refuse(name, reason.clone());
        }
    }
    plan
}

impl Plan {
    /// Names to merge, oldest first: the content of `.systemd-sysext/extensions`.
    pub fn merged_names(&self) -> Vec<String> {
        self.images.iter().filter(|d| d.action == Action::Merge).map(|d| d.name.clone()).collect()
    }

    /// Whether `other` merges the same images, in the same layers.
    pub fn same_merge(&self, other: &Plan) -> bool {
        let layers = |p: &Plan| p.hierarchies.iter().map(|h| (h.hierarchy, h.layers.clone())).collect::<Vec<_>>();
        self.merged_names() == other.merged_names() && layers(self) == layers(other)
    }

    /// The plan of one hierarchy.
    pub fn hierarchy(&self, h: Hierarchy) -> Option<&HierarchyPlan> {
        self.hierarchies.iter().find(|p| p.hierarchy == h)
    }

    /// Skip an image by a rule; unlike `demote`, not a failure the booted system might overcome.
    fn refuse(&mut self, name: &str, reason: String) {
        self.demote(name, reason);
        for d in self.images.iter_mut().filter(|d| d.name == name) {
            d.failed = false;
        }
    }

    /// Drop an image that failed while applying; it becomes a skip with the failure as reason.
    pub fn demote(&mut self, name: &str, reason: String) {
        for d in self.images.iter_mut().filter(|d| d.name == name) {
            d.action = Action::Skip { reason: reason.clone() };
            d.failed = true;
        }
        for h in &mut self.hierarchies {
            h.layers.retain(|l| l != name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline;
    use crate::validate::tests::host;
    use crate::validate::Node;

    fn facts(release: &str) -> Facts {
        Facts {
            release_files: vec![ReleaseFile {
                suffix: "NAME".into(),
                strict_xattr: None,
                content: release.as_bytes().to_vec(),
            }],
            has_os_release: false,
            content: vec![Hierarchy::Usr],
            conflicts: vec![],
            sensitive: vec![],
            machine_id: None,
        }
    }

    fn image(name: &str, f: Facts) -> ImageInput {
        let mut f = f;
        for r in &mut f.release_files {
            if r.suffix == "NAME" {
                r.suffix = name.into();
            }
        }
        ImageInput {
            name: name.into(),
            path: format!("/var/lib/extensions/{name}.raw"),
            target: None,
            size: 4096,
            kind: Ok(Kind::Squashfs),
            trust: Some(Ok(Trust::none())),
            facts: Some(Ok(f)),
            origin: None,
        }
    }

    fn good(name: &str) -> ImageInput {
        image(name, facts("ID=debian\nVERSION_ID=13\n"))
    }

    fn inputs(cmd: &str, images: Vec<ImageInput>) -> Inputs {
        let cmdline = cmdline::parse(cmd);
        Inputs {
            class: Class::Sysext,
            policy: cmdline.policy.unwrap_or(Policy::Any),
            cmdline,
            host: Ok(host()),
            hierarchies: vec![(Hierarchy::Usr, HierarchyState::Ready), (Hierarchy::Opt, HierarchyState::Ready)],
            images,
            etc: None,
        }
    }

    fn reason<'a>(plan: &'a Plan, name: &str) -> &'a str {
        match &plan.images.iter().find(|d| d.name == name).unwrap().action {
            Action::Skip { reason } => reason,
            Action::Merge => panic!("{name} was merged"),
        }
    }

    fn layers(plan: &Plan, h: Hierarchy) -> Vec<&str> {
        plan.hierarchies.iter().find(|p| p.hierarchy == h).unwrap().layers.iter().map(String::as_str).collect()
    }

    #[test]
    fn layer_order_is_version_order_with_newest_on_top() {
        let mut opt = good("b-tools");
        opt.facts.as_mut().unwrap().as_mut().unwrap().content = vec![Hierarchy::Usr, Hierarchy::Opt];
        let plan = build(&inputs("", vec![good("ext-10"), good("ext-9"), opt, good("a")]));
        assert_eq!(layers(&plan, Hierarchy::Usr), ["ext-10", "ext-9", "b-tools", "a"]);
        assert_eq!(layers(&plan, Hierarchy::Opt), ["b-tools"]);
        assert_eq!(plan.merged_names(), ["a", "b-tools", "ext-9", "ext-10"]);
    }

    #[test]
    fn disabled_skips_everything_and_says_by_what() {
        let plan = build(&inputs("rd.systemd.sysext=0", vec![good("podman")]));
        assert_eq!(reason(&plan, "podman"), "merging is disabled by rd.systemd.sysext=0");
        assert!(layers(&plan, Hierarchy::Usr).is_empty());
    }

    #[test]
    fn selection_by_name() {
        let plan = build(&inputs("rd.sysext=podman,missing", vec![good("podman"), good("other")]));
        assert_eq!(layers(&plan, Hierarchy::Usr), ["podman"]);
        assert_eq!(reason(&plan, "other"), "not listed in rd.sysext=podman,missing");
        assert_eq!(plan.notes, ["rd.sysext names missing, but no image of that name was found"]);
    }

    #[test]
    fn release_mismatch_is_the_reason() {
        let plan = build(&inputs("", vec![image("old", facts("ID=debian\nVERSION_ID=12\n")), good("ok")]));
        assert_eq!(reason(&plan, "old"), "VERSION_ID 12 does not match host 13");
        assert_eq!(layers(&plan, Hierarchy::Usr), ["ok"]);
    }

    #[test]
    fn kinds_and_inspection_failures() {
        let mut ddi = good("ddi");
        ddi.kind = Ok(Kind::Ddi);
        ddi.trust = Some(Err("has more than one usr partition; which one to use is ambiguous".into()));
        let mut junk = good("junk");
        junk.kind = Err("is empty (0 bytes)".into());
        let mut broken = good("broken");
        broken.facts = Some(Err("mounting erofs failed: invalid argument".into()));
        let plan = build(&inputs("", vec![ddi, junk, broken]));
        assert_eq!(reason(&plan, "ddi"), "has more than one usr partition; which one to use is ambiguous");
        assert_eq!(reason(&plan, "junk"), "is empty (0 bytes)");
        assert_eq!(reason(&plan, "broken"), "mounting erofs failed: invalid argument");
        // A rule refused ddi and junk; broken failed, and the booted system may retry it.
        let failed: Vec<&str> = plan.images.iter().filter(|d| d.failed).map(|d| d.name.as_str()).collect();
        assert_eq!(failed, ["broken"]);
    }

    #[test]
    fn forbidden_content_and_conflicts() {
        let mut os = facts("ID=debian\nVERSION_ID=13\n");
        os.has_os_release = true;
        let mut shadow = facts("ID=debian\nVERSION_ID=13\n");
        shadow.conflicts = vec![
            Conflict { path: "/usr/sbin".into(), base: Node::Symlink, image: Node::Directory },
            Conflict { path: "/usr/lib64".into(), base: Node::Directory, image: Node::Symlink },
        ];
        let mut empty = facts("ID=debian\nVERSION_ID=13\n");
        empty.content.clear();
        let plan = build(&inputs("", vec![image("os", os), image("shadow", shadow), image("empty", empty)]));
        assert_eq!(reason(&plan, "os"), "contains usr/lib/os-release, which only the base OS may carry");
        assert_eq!(
            reason(&plan, "shadow"),
            "/usr/sbin is a directory in the image and would replace the base's symlink (sysext-bakery#131) (and 1 more)"
        );
        assert_eq!(reason(&plan, "empty"), "has no files under /usr or /opt");
    }

    #[test]
    fn already_merged_means_hands_off() {
        let mut i = inputs("", vec![good("podman"), good("new")]);
        i.hierarchies[0].1 = HierarchyState::Merged { extensions: vec!["podman".into()] };
        let plan = build(&i);
        assert_eq!(reason(&plan, "podman"), "already merged into /usr");
        assert!(reason(&plan, "new").starts_with("/usr is already merged (podman)"));
        assert!(plan.hierarchies.iter().all(|h| h.layers.is_empty()));
    }

    #[test]
    fn unusable_hierarchy_skips_images_that_need_it_only() {
        let mut i = inputs("", vec![good("usr-only")]);
        let mut both = good("both");
        both.facts.as_mut().unwrap().as_mut().unwrap().content = vec![Hierarchy::Usr, Hierarchy::Opt];
        i.images.push(both);
        i.hierarchies[1].1 = HierarchyState::Unusable { reason: "/opt is a regular file".into() };
        let plan = build(&i);
        assert_eq!(reason(&plan, "both"), "needs /opt, which cannot be merged onto: /opt is a regular file");
        assert_eq!(layers(&plan, Hierarchy::Usr), ["usr-only"]);
    }

    #[test]
    fn no_host_release_skips_with_reason() {
        let mut i = inputs("", vec![good("podman")]);
        i.host = Err("no os-release".into());
        let plan = build(&i);
        assert_eq!(reason(&plan, "podman"), "cannot check against the root: no os-release");
        assert_eq!(plan.notes, ["cannot read the root's os-release: no os-release"]);
    }

    fn trust(root_hash: bool, signature: Signature) -> Trust {
        Trust { root_hash: root_hash.then(|| "ab".repeat(32)), signature }
    }

    #[test]
    fn policy_signed_refuses_everything_but_a_valid_signature() {
        let valid = Signature::Valid { signer: "CN=podman".into() };
        let bad = Signature::Invalid { reason: "unknown signer: CN=mallory".into() };
        let cases = [
            (trust(true, valid.clone()), Ok(None)),
            (trust(true, bad.clone()), Err("unknown signer: CN=mallory (policy signed)")),
            (trust(true, Signature::Absent), Err("unsigned: it has dm-verity data but no signature (policy signed)")),
            (Trust::none(), Err("unsigned: it has no dm-verity data and no signature (policy signed)")),
            (
                trust(true, Signature::Unchecked),
                Err("its signature cannot be checked: no usable trusted certificate is installed (policy signed)"),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(admit(Policy::Signed, &t), want.map_err(String::from), "{t:?}");
        }
    }

    #[test]
    fn weaker_policies_merge_with_warnings() {
        let bad = Signature::Invalid { reason: "bad signature".into() };
        assert_eq!(admit(Policy::Verity, &Trust::none()), Err("has no dm-verity data (policy verity)".into()));
        assert_eq!(admit(Policy::Verity, &trust(true, Signature::Absent)), Ok(None));
        assert_eq!(
            admit(Policy::Verity, &trust(true, bad)),
            Ok(Some("signature not accepted (bad signature); merged because the policy is verity".into()))
        );
        assert_eq!(admit(Policy::Any, &Trust::none()), Ok(Some("not signed: merged because the policy is any".into())));
        assert_eq!(
            admit(Policy::Any, &trust(true, Signature::Unchecked)),
            Ok(Some("signature not checked: no usable trusted certificate is installed".into()))
        );
        assert_eq!(default_policy(false), Policy::Any);
        assert_eq!(default_policy(true), Policy::Signed);
    }

    #[test]
    fn refused_images_are_named_with_the_policy_reason() {
        let mut i = inputs("rd.sysext.policy=signed", vec![good("plain")]);
        let mut signed = good("signed");
        signed.trust = Some(Ok(trust(true, Signature::Valid { signer: "CN=podman".into() })));
        i.images.push(signed);
        let plan = build(&i);
        assert_eq!(reason(&plan, "plain"), "unsigned: it has no dm-verity data and no signature (policy signed)");
        assert_eq!(layers(&plan, Hierarchy::Usr), ["signed"]);
        let d = plan.images.iter().find(|d| d.name == "signed").unwrap();
        assert_eq!(d.trust.as_deref(), Some("dm-verity, signed by CN=podman"));
        assert_eq!(d.warning, None);
    }

    #[test]
    fn demote_removes_from_every_layer_list() {
        let mut plan = build(&inputs("", vec![good("a"), good("b")]));
        plan.demote("a", "overlay refused it".into());
        assert_eq!(layers(&plan, Hierarchy::Usr), ["b"]);
        assert!(plan.images.iter().any(|d| d.name == "a" && d.failed));
        assert_eq!(reason(&plan, "a"), "overlay refused it");
        assert_eq!(plan.merged_names(), ["b"]);
    }

    use crate::mutable::{Entry, Mode, MutableDir, Upper};

    /// A confext with a release file for `name` and files under /etc.
    fn confext(name: &str) -> ImageInput {
        let mut f = facts("ID=debian\nVERSION_ID=13\n");
        f.content = vec![Hierarchy::Etc];
        let mut i = image(name, f);
        i.path = format!("/var/lib/confexts/{name}.raw");
        i
    }

    fn etc_facts(machine_id: Option<Entry>) -> EtcFacts {
        EtcFacts {
            mode: 0o755,
            host_has_entries: true,
            machine_id,
            mutable_dir: MutableDir::Missing { path: mutable::MUTABLE_DIR.into(), read_only_fs: false },
            var_unmounted: None,
        }
    }

    fn confext_inputs(choice: Choice, machine_id: Option<Entry>, images: Vec<ImageInput>) -> Inputs {
        let mut i = inputs("", images);
        i.class = Class::Confext;
        i.hierarchies = vec![(Hierarchy::Etc, HierarchyState::Ready)];
        i.etc = Some(EtcInputs { choice, facts: etc_facts(machine_id) });
        i
    }

    fn default_mode() -> Choice {
        Choice { mode: Mode::No, source: Source::Default }
    }

    fn chosen(mode: Mode) -> Choice {
        Choice { mode, source: Source::Config("/etc/systemd/confext.conf".into()) }
    }

    #[test]
    fn a_read_only_etc_nobody_chose_is_said_in_one_line() {
        let plan = build(&confext_inputs(default_mode(), Some(Entry::Present), vec![confext("site")]));
        assert_eq!(layers(&plan, Hierarchy::Etc), ["site"]);
        assert!(plan.hierarchy(Hierarchy::Etc).unwrap().layout.as_ref().unwrap().read_only());
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        let n = &plan.notes[0];
        assert!(
            n.starts_with("/etc will be read-only: mutable mode no is systemd's default, nobody chose it; "),
            "{n}"
        );
        assert!(n.contains("To choose a mode: set Mutable= in [ConfExt] of /etc/systemd/confext.conf"), "{n}");
        // Chosen, it is just done.
        let plan = build(&confext_inputs(chosen(Mode::No), Some(Entry::Present), vec![confext("site")]));
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        // An empty machine-id becomes transient: said as the consequence.
        let plan = build(&confext_inputs(default_mode(), Some(Entry::Unset), vec![confext("site")]));
        assert!(plan.notes[0].contains("the machine ID is transient"), "{:?}", plan.notes);
    }

    #[test]
    fn no_read_only_etc_without_machine_id_unless_chosen() {
        // The base has no machine-id: by default the confexts wait, with the reason and the fix.
        let plan = build(&confext_inputs(default_mode(), None, vec![confext("site")]));
        let r = reason(&plan, "site");
        assert!(r.starts_with("/etc is not merged: mutable mode no, the default, would leave /etc read-only and without /etc/machine-id"), "{r}");
        assert!(r.contains("System cannot boot") && r.contains("Mutable="), "{r}");
        assert!(!plan.images[0].failed);
        assert!(layers(&plan, Hierarchy::Etc).is_empty());
        // A confext that supplies one makes the merge bootable.
        let mut with_id = confext("id");
        with_id.facts.as_mut().unwrap().as_mut().unwrap().machine_id = Some(Entry::Unset);
        let plan = build(&confext_inputs(default_mode(), None, vec![confext("site"), with_id]));
        assert_eq!(layers(&plan, Hierarchy::Etc), ["site", "id"]);
        // A whiteout on top takes the base's away.
        let mut wo = confext("wo");
        wo.facts.as_mut().unwrap().as_mut().unwrap().machine_id = Some(Entry::Whiteout);
        let plan = build(&confext_inputs(default_mode(), Some(Entry::Present), vec![wo.clone()]));
        assert!(reason(&plan, "wo").contains("without /etc/machine-id"));
        // Chosen explicitly, it is obeyed as systemd does, with a warning.
        let plan = build(&confext_inputs(chosen(Mode::No), Some(Entry::Present), vec![wo]));
        assert_eq!(layers(&plan, Hierarchy::Etc), ["wo"]);
        assert!(
            plan.notes[0].starts_with(
                "/etc will be read-only (mutable mode no from /etc/systemd/confext.conf) and has no /etc/machine-id"
            ),
            "{:?}",
            plan.notes
        );
        // A writable /etc needs nothing of the sort.
        let plan = build(&confext_inputs(chosen(Mode::Ephemeral), None, vec![confext("site")]));
        assert_eq!(layers(&plan, Hierarchy::Etc), ["site"]);
        assert_eq!(plan.hierarchy(Hierarchy::Etc).unwrap().layout.as_ref().unwrap().upper, Upper::Ephemeral);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn a_mode_systemd_cannot_honour_skips_etc_with_the_reason() {
        let mut i = confext_inputs(chosen(Mode::Yes), Some(Entry::Present), vec![confext("site")]);
        i.etc.as_mut().unwrap().facts.mutable_dir =
            MutableDir::Missing { path: mutable::MUTABLE_DIR.into(), read_only_fs: true };
        let plan = build(&i);
        let r = reason(&plan, "site");
        assert!(
            r.starts_with("/etc is not merged: mutable mode yes needs /var/lib/extensions.mutable/etc created"),
            "{r}"
        );
        assert!(plan.hierarchy(Hierarchy::Etc).unwrap().skipped.is_some());
    }

    #[test]
    fn confexts_may_replace_base_files_and_are_told_about_it() {
        let mut shadow = confext("shadow");
        let f = shadow.facts.as_mut().unwrap().as_mut().unwrap();
        f.conflicts = vec![Conflict { path: "/etc/localtime".into(), base: Node::Symlink, image: Node::Other }];
        f.sensitive =
            vec![("/etc/fstab".into(), true), ("/etc/machine-id".into(), true), ("/etc/extensions".into(), false)];
        let plan = build(&confext_inputs(chosen(Mode::No), Some(Entry::Present), vec![shadow]));
        assert_eq!(layers(&plan, Hierarchy::Etc), ["shadow"]);
        let w = plan.images[0].warning.as_deref().unwrap();
        assert!(w.contains("; /etc/localtime is a file in the image and would replace the base's symlink; "), "{w}");
        assert!(w.contains("replaces the base's /etc/fstab: the initrd has mounted by the base's already"), "{w}");
        assert!(w.contains("replaces the base's /etc/machine-id: PID 1 takes the machine ID from it"), "{w}");
        assert!(w.contains("adds /etc/extensions: only the booted systemd-sysext sees it"), "{w}");
    }

    #[test]
    fn confext_switches_and_rules_name_the_confext_side() {
        let mut i = confext_inputs(chosen(Mode::No), Some(Entry::Present), vec![confext("a"), confext("b")]);
        i.cmdline = cmdline::parse("rd.confext=a,c rd.sysext=0");
        let plan = build(&i);
        assert_eq!(layers(&plan, Hierarchy::Etc), ["a"]);
        assert_eq!(reason(&plan, "b"), "not listed in rd.confext=a,c");
        assert_eq!(plan.notes, ["rd.confext names c, but no image of that name was found"]);
        let mut empty = confext("empty");
        empty.facts.as_mut().unwrap().as_mut().unwrap().content.clear();
        let plan = build(&confext_inputs(chosen(Mode::No), Some(Entry::Present), vec![empty]));
        assert_eq!(reason(&plan, "empty"), "has no files under /etc");
    }
}
