//! Typed kernel parameters. A kernel's fixed parameters are one `#[repr(C)]` Pod struct,
//! declared once with [`kernel_params!`]; the same declaration generates the WGSL `struct`
//! and a `params()` function that reads it from the head of the metadata binding `info`
//! (an `array<u32>`, bound as before: see `shaders/prelude.wgsl`). Layout blocks of any rank
//! follow the struct in `info`; a `u32` field holds each block's base ([`Meta::layout`]).
//!
//! Every field is a 4-byte scalar (u32, i32, f32), so the struct has no padding, field k is
//! word k on both sides, and the storage-buffer layout rules hold trivially (a test checks
//! the Rust size and naga's layout of the generated struct agree).

use std::marker::PhantomData;

use kiln_backend::{Layout, Result};

/// A 4-byte scalar a kernel parameter can be, with its WGSL type and how a `u32` word of
/// `info` becomes it.
pub(crate) trait WgslScalar: bytemuck::Pod {
    const WGSL: &'static str;
    /// WGSL turning the word expression `word` into this type.
    fn from_word(word: &str) -> String;
}

impl WgslScalar for u32 {
    const WGSL: &'static str = "u32";
    fn from_word(word: &str) -> String {
        word.to_string()
    }
}

impl WgslScalar for i32 {
    const WGSL: &'static str = "i32";
    fn from_word(word: &str) -> String {
        format!("bitcast<i32>({word})")
    }
}

impl WgslScalar for f32 {
    const WGSL: &'static str = "f32";
    fn from_word(word: &str) -> String {
        format!("bitcast<f32>({word})")
    }
}

/// A field of a parameter struct: its name, its WGSL type, and how a word becomes its value.
pub(crate) type Field = (&'static str, &'static str, fn(&str) -> String);

/// A kernel's parameter struct; implemented by [`kernel_params!`], never by hand.
pub(crate) trait KernelParams: bytemuck::Pod {
    /// The WGSL struct's name (the Rust one).
    const NAME: &'static str;
    /// Field names, their WGSL types and word-to-value conversions, in declaration order.
    const FIELDS: &'static [Field];

    /// The struct as metadata words.
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(std::slice::from_ref(self))
    }
}

/// Declares a kernel parameter struct: `#[repr(C)]`, Pod, and its [`KernelParams`] impl.
macro_rules! kernel_params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)*
        }

        impl $crate::kernels::params::KernelParams for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [$crate::kernels::params::Field] = &[
                $((stringify!($field), <$ty as $crate::kernels::params::WgslScalar>::WGSL,
                   <$ty as $crate::kernels::params::WgslScalar>::from_word)),*
            ];
        }

        // Every field is one 4-byte word: no padding, field k is word k in WGSL too.
        const _: () = assert!(
            std::mem::size_of::<$name>() == 4 * <$name as $crate::kernels::params::KernelParams>::FIELDS.len()
        );
    };
}
pub(crate) use kernel_params;

/// The WGSL of `P`: its struct and `fn params() -> P`, reading the head of `info`.
pub(crate) fn wgsl<P: KernelParams>() -> String {
    let mut fields = String::new();
    let mut loads = Vec::new();
    for (k, (name, ty, from_word)) in P::FIELDS.iter().enumerate() {
        fields.push_str(&format!("    {name}: {ty},\n"));
        loads.push(from_word(&format!("info[{k}u]")));
    }
    let name = P::NAME;
    format!(
        "// Generated from the Rust struct {name} (kernels/params.rs): words 0..{n} of `info`.\n\
         struct {name} {{\n{fields}}}\n\n\
         fn params() -> {name} {{\n    return {name}({});\n}}\n",
        loads.join(", "),
        n = P::FIELDS.len(),
    )
}

/// Metadata words of one dispatch: `P` at the head, then layout blocks.
pub(crate) struct Meta<P: KernelParams> {
    words: Vec<u32>,
    params: PhantomData<P>,
}

impl<P: KernelParams> Meta<P> {
    /// Room for `P` at the head, to be filled by [`finish`](Self::finish).
    pub(crate) fn new() -> Self {
        Self { words: vec![0; P::FIELDS.len()], params: PhantomData }
    }

    /// Appends the layout block `[offset, rank, shape.., strides..]` of `l` and returns its
    /// base (a word index for `layout_index`); errors past u32 indexing.
    pub(crate) fn layout(&mut self, op: &'static str, l: &Layout) -> Result<u32> {
        let base = self.words.len() as u32;
        super::push_layout(op, &mut self.words, l)?;
        Ok(base)
    }

    /// The words, with `params` at the head.
    pub(crate) fn finish(mut self, params: P) -> Vec<u32> {
        self.words[..P::FIELDS.len()].copy_from_slice(params.words());
        self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    kernel_params! {
        struct Example { n: u32, shift: i32, scale: f32 }
    }

    #[test]
    fn words_follow_the_declaration() {
        let p = Example { n: 7, shift: -2, scale: 1.5 };
        assert_eq!(p.words(), &[7, (-2i32) as u32, 1.5f32.to_bits()]);
        let mut meta = Meta::<Example>::new();
        let base = meta.layout("test", &Layout::contiguous(&[2, 3])).expect("layout");
        assert_eq!(base, 3);
        assert_eq!(meta.finish(p), vec![7, (-2i32) as u32, 1.5f32.to_bits(), 0, 2, 2, 3, 3, 1]);
    }

    #[test]
    fn wgsl_declares_and_loads_every_field() {
        let src = wgsl::<Example>();
        assert!(src.contains("struct Example {\n    n: u32,\n    shift: i32,\n    scale: f32,\n}"), "{src}");
        assert!(src.contains("return Example(info[0u], bitcast<i32>(info[1u]), bitcast<f32>(info[2u]));"), "{src}");
    }
}
