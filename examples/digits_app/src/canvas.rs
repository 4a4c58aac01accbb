//! The drawing canvas: a 28×28 grid of ink in `[0, 1]`, shown enlarged, painted with a soft
//! round brush, and turned into the input an MNIST model expects.

use eframe::egui::{
    self, Color32, ColorImage, Event, PointerButton, Pos2, Rect, Sense, TextureHandle, TextureOptions, Vec2,
};
use kiln_data::{MNIST_MEAN, MNIST_SIDE, MNIST_STD};

const SIDE: usize = MNIST_SIDE;

/// Brush profile in cells: full ink within `BRUSH_CORE` of the pointer, fading to none at
/// `BRUSH_EDGE`, about the 2–3 pixel strokes of MNIST's digits.
const BRUSH_CORE: f32 = 0.6;
const BRUSH_EDGE: f32 = 1.4;

/// The ink grid and what the widget needs to paint and follow strokes.
pub struct Canvas {
    /// Row-major ink, 0 = background, 1 = full ink.
    ink: Vec<f32>,
    /// The cell position of the pointer while the primary button is held on the canvas.
    stroke_from: Option<Pos2>,
    texture: Option<TextureHandle>,
    /// Bumped on every change, so that a prediction can be matched to the drawing it is for.
    generation: u64,
    /// Where the canvas was drawn last frame (screen points), for scripted input.
    rect: Option<Rect>,
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas { ink: vec![0.0; SIDE * SIDE], stroke_from: None, texture: None, generation: 0, rect: None }
    }
}

impl Canvas {
    /// Changes with every stroke and clear.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The canvas' rectangle on screen in the last frame (`None` before it was first shown).
    pub fn screen_rect(&self) -> Option<Rect> {
        self.rect
    }

    /// The screen position of the centre of cell `(x, y)`, once the canvas has been shown.
    pub fn cell_center(&self, x: usize, y: usize) -> Option<Pos2> {
        let rect = self.rect?;
        let cell = rect.width() / SIDE as f32;
        Some(rect.min + Vec2::new((x as f32 + 0.5) * cell, (y as f32 + 0.5) * cell))
    }

    pub fn ink(&self) -> &[f32] {
        &self.ink
    }

    pub fn is_empty(&self) -> bool {
        self.ink.iter().all(|&v| v <= 0.0)
    }

    pub fn clear(&mut self) {
        self.ink.fill(0.0);
        self.stroke_from = None;
        self.generation += 1;
    }

    /// Paints the canvas, `side` points square, and applies this frame's pointer events to it.
    /// Every pointer event counts, not only the last position of the frame, so a fast stroke
    /// (or a scripted one injected in a single frame) stays continuous.
    pub fn show(&mut self, ui: &mut egui::Ui, side: f32) -> egui::Response {
        let (rect, response) = ui.allocate_exact_size(Vec2::splat(side), Sense::click_and_drag());
        self.rect = Some(rect);
        let cell = side / SIDE as f32;
        let to_cell = |p: Pos2| Pos2::new((p.x - rect.min.x) / cell - 0.5, (p.y - rect.min.y) / cell - 0.5);
        let events = ui.input(|i| i.events.clone());
        let before = self.generation;
        for event in events {
            match event {
                Event::PointerButton { pos, button: PointerButton::Primary, pressed: true, .. }
                    if rect.contains(pos) =>
                {
                    let at = to_cell(pos);
                    self.dab_segment(at, at);
                    self.stroke_from = Some(at);
                }
                Event::PointerButton { button: PointerButton::Primary, pressed: false, .. } | Event::PointerGone => {
                    self.stroke_from = None;
                }
                Event::PointerMoved(pos) => {
                    if let Some(from) = self.stroke_from {
                        let to = to_cell(pos);
                        self.dab_segment(from, to);
                        self.stroke_from = Some(to);
                    }
                }
                _ => {}
            }
        }
        if self.generation != before || self.texture.is_none() {
            let image = self.image();
            match &mut self.texture {
                Some(texture) => texture.set(image, TextureOptions::NEAREST),
                None => self.texture = Some(ui.ctx().load_texture("digits-canvas", image, TextureOptions::NEAREST)),
            }
        }
        if let Some(texture) = &self.texture {
            let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
            ui.painter().image(texture.id(), rect, uv, Color32::WHITE);
        }
        ui.painter().rect_stroke(rect, 2.0, ui.visuals().widgets.noninteractive.bg_stroke, egui::StrokeKind::Outside);
        response
    }

    /// Ink along the segment `from`–`to` (cell coordinates, cell centres at integers), with
    /// dabs a quarter cell apart; each cell keeps the darkest ink it got.
    fn dab_segment(&mut self, from: Pos2, to: Pos2) {
        let steps = ((to - from).length() * 4.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let p = from + (to - from) * (s as f32 / steps as f32);
            self.dab(p);
        }
        self.generation += 1;
    }

    fn dab(&mut self, p: Pos2) {
        let reach = BRUSH_EDGE.ceil() as i64;
        let (cx, cy) = (p.x.round() as i64, p.y.round() as i64);
        for y in (cy - reach).max(0)..=(cy + reach).min(SIDE as i64 - 1) {
            for x in (cx - reach).max(0)..=(cx + reach).min(SIDE as i64 - 1) {
                let d = Vec2::new(x as f32 - p.x, y as f32 - p.y).length();
                let ink = ((BRUSH_EDGE - d) / (BRUSH_EDGE - BRUSH_CORE)).clamp(0.0, 1.0);
                let cell = &mut self.ink[y as usize * SIDE + x as usize];
                *cell = cell.max(ink);
            }
        }
    }

    /// White ink on black, as MNIST shows digits.
    fn image(&self) -> ColorImage {
        let pixels = self.ink.iter().map(|&v| Color32::from_gray((v.clamp(0.0, 1.0) * 255.0).round() as u8)).collect();
        ColorImage::new([SIDE, SIDE], pixels)
    }
}

/// The model's input for `ink` (28×28 in `[0, 1]`), prepared the way MNIST's digits were:
/// the ink's bounding box scaled so its longer side is 20 pixels, then placed so that its
/// centre of mass sits at the image centre; then normalised with MNIST's mean and deviation.
/// `None` when there is no ink.
pub fn mnist_input(ink: &[f32]) -> Option<Vec<f32>> {
    centered(ink).map(|img| img.iter().map(|&v| (v - MNIST_MEAN) / MNIST_STD).collect())
}

/// The size-normalised, centred 28×28 ink image of [`mnist_input`], before normalisation.
pub fn centered(ink: &[f32]) -> Option<Vec<f32>> {
    const BOX: f32 = 20.0;
    let on = |x: usize, y: usize| ink[y * SIDE + x] > 0.05;
    let (mut x0, mut y0, mut x1, mut y1) = (SIDE, SIDE, 0, 0);
    for y in 0..SIDE {
        for x in 0..SIDE {
            if on(x, y) {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    if x0 > x1 {
        return None;
    }
    let (w, h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
    let scale = BOX / w.max(h);
    let (sw, sh) = ((w * scale).round().max(1.0) as usize, (h * scale).round().max(1.0) as usize);
    // Bilinear resampling of the box into an sw × sh patch.
    let sample = |fx: f32, fy: f32| {
        let (fx, fy) = (fx.clamp(0.0, (SIDE - 1) as f32), fy.clamp(0.0, (SIDE - 1) as f32));
        let (ix, iy) = (fx.floor() as usize, fy.floor() as usize);
        let (jx, jy) = ((ix + 1).min(SIDE - 1), (iy + 1).min(SIDE - 1));
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let at = |x: usize, y: usize| ink[y * SIDE + x];
        (at(ix, iy) * (1.0 - tx) + at(jx, iy) * tx) * (1.0 - ty) + (at(ix, jy) * (1.0 - tx) + at(jx, jy) * tx) * ty
    };
    let mut patch = vec![0.0f32; sw * sh];
    let (mut mass, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    for py in 0..sh {
        for px in 0..sw {
            let fx = x0 as f32 + (px as f32 + 0.5) / scale - 0.5;
            let fy = y0 as f32 + (py as f32 + 0.5) / scale - 0.5;
            let v = sample(fx, fy);
            patch[py * sw + px] = v;
            (mass, mx, my) = (mass + v, mx + v * px as f32, my + v * py as f32);
        }
    }
    if mass <= 0.0 {
        return None;
    }
    // Shift so the centre of mass lands on the image centre (13.5, 13.5).
    let centre = (SIDE as f32 - 1.0) / 2.0;
    let (ox, oy) = ((centre - mx / mass).round() as i64, (centre - my / mass).round() as i64);
    let mut out = vec![0.0f32; SIDE * SIDE];
    for py in 0..sh {
        for px in 0..sw {
            let (x, y) = (px as i64 + ox, py as i64 + oy);
            if (0..SIDE as i64).contains(&x) && (0..SIDE as i64).contains(&y) {
                out[y as usize * SIDE + x as usize] = patch[py * sw + px];
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_canvas_has_no_input() {
        assert!(mnist_input(&[0.0; SIDE * SIDE]).is_none());
    }

    #[test]
    fn a_small_off_centre_square_is_scaled_to_20_and_centred() {
        let mut ink = vec![0.0f32; SIDE * SIDE];
        for y in 2..7 {
            for x in 1..6 {
                ink[y * SIDE + x] = 1.0;
            }
        }
        let out = centered(&ink).unwrap();
        let on: Vec<(usize, usize)> =
            (0..SIDE * SIDE).filter(|&i| out[i] > 0.5).map(|i| (i % SIDE, i / SIDE)).collect();
        let (xs, ys): (Vec<usize>, Vec<usize>) = on.iter().copied().unzip();
        let (w, h) = (
            xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1,
            ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1,
        );
        assert!((19..=21).contains(&w) && (19..=21).contains(&h), "box {w}x{h}");
        let cx = xs.iter().sum::<usize>() as f32 / xs.len() as f32;
        let cy = ys.iter().sum::<usize>() as f32 / ys.len() as f32;
        assert!((cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0, "centre ({cx}, {cy})");
    }

    #[test]
    fn a_dab_inks_the_cell_under_it_fully_and_fades_outwards() {
        let mut c = Canvas::default();
        c.dab_segment(Pos2::new(10.0, 10.0), Pos2::new(10.0, 10.0));
        assert_eq!(c.ink[10 * SIDE + 10], 1.0);
        assert!(c.ink[10 * SIDE + 11] > 0.0 && c.ink[10 * SIDE + 11] < 1.0);
        assert_eq!(c.ink[10 * SIDE + 13], 0.0);
        assert_eq!(c.generation(), 1);
    }
}
