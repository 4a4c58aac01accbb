//! Filling a WGSL template's `{{KEY}}` placeholders. Every kernel source goes through
//! [`Template`], so a key the source lacks or a placeholder left unfilled is caught in one
//! place: a debug build (every test) panics naming both, and a release build hands the WGSL
//! to naga unchanged, where a leftover `{{KEY}}` fails to parse and surfaces as a typed
//! `Error::Backend` rather than a panic in the user's program.

use crate::kernels::params::KernelParams;

/// A WGSL source with placeholders being filled: `Template::new(SRC).set("T", "f32").render()`.
#[must_use = "a template does nothing until rendered"]
pub(crate) struct Template {
    src: String,
}

impl Template {
    pub(crate) fn new(src: &str) -> Self {
        Self { src: src.to_string() }
    }

    /// Replaces every `{{key}}` with `value`; the source must contain the placeholder.
    pub(crate) fn set(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let placeholder = format!("{{{{{key}}}}}");
        debug_assert!(self.src.contains(&placeholder), "shader template has no {placeholder}:\n{}", head(&self.src));
        self.src = self.src.replace(&placeholder, value.as_ref());
        self
    }

    /// [`set`](Self::set) for a filler shared by several templates, not all of which use `key`
    /// (the attention tilings fill forward and backward shaders from one list).
    pub(crate) fn set_optional(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.src = self.src.replace(&format!("{{{{{key}}}}}"), value.as_ref());
        self
    }

    /// Fills `{{PARAMS}}` with the WGSL of `P` (its struct and the `params()` loader).
    pub(crate) fn params<P: KernelParams>(self) -> Self {
        self.set("PARAMS", crate::kernels::params::wgsl::<P>())
    }

    /// The finished source; no placeholder may be left.
    pub(crate) fn render(self) -> String {
        debug_assert!(
            unfilled(&self.src).is_none(),
            "shader template leaves {:?} unfilled:\n{}",
            unfilled(&self.src),
            head(&self.src)
        );
        self.src
    }
}

/// The first `{{KEY}}` left in `src`, if any (keys are upper-case words).
pub(crate) fn unfilled(src: &str) -> Option<&str> {
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        if let Some(end) = after.find("}}")
            && !after[..end].is_empty()
            && after[..end].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Some(&rest[start..start + end + 4]);
        }
        rest = after;
    }
    None
}

/// The first lines of a source, to name the template in a panic message.
fn head(src: &str) -> String {
    src.lines().take(3).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder() {
        let out = Template::new("var<storage> a: array<{{T}}>; // {{T}} {{N}}").set("T", "f32").set("N", "4").render();
        assert_eq!(out, "var<storage> a: array<f32>; // f32 4");
        let out = Template::new("{{A}}").set_optional("A", "a").set_optional("ABSENT", "b").render();
        assert_eq!(out, "a");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "has no {{MISSING}}")]
    fn a_key_the_source_lacks_panics() {
        let _ = Template::new("array<{{T}}>").set("T", "f32").set("MISSING", "x");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "{{N}}")]
    fn an_unfilled_placeholder_panics() {
        let _ = Template::new("array<{{T}}, {{N}}>").set("T", "f32").render();
    }

    #[test]
    fn finds_only_placeholders() {
        assert_eq!(unfilled("a {{T}} b"), Some("{{T}}"));
        assert_eq!(unfilled("{ {} } {{ }} {{lower}}"), None);
        assert_eq!(unfilled("x {{ {{K_2}}"), Some("{{K_2}}"));
    }
}
