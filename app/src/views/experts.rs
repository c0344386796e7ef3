//! The experts view: for a mixture-of-experts model, which experts the prompt's tokens went to.
//! A layer × expert grid of usage (the fraction of the tokens routed to each expert, from the
//! shared run's routing capture); the tokens below with each one's experts per layer on hover;
//! clicking an expert ablates it (its routing weight zeroed, the others kept) and shows the
//! per-token Δ surprisal (on top of the interventions already in force), which can then be
//! applied everywhere.

use std::any::Any;

use egui::{RichText, Ui};
use prism_analysis::ablation::{expert_ablation, AblationMode};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;

use super::grid::Grid;
use super::strip;
use super::{Cx, View};

#[derive(Default)]
pub struct ExpertsView {
    /// The ablated expert (layer, expert) and its run against the shared prompt's ids.
    pub detail: Option<Detail>,
    /// The shared run the detail belongs to.
    run_id: u64,
}

pub struct Detail {
    pub expert: (usize, usize),
    pub ids: Vec<u32>,
    /// The run with the expert ablated.
    pub trace: Option<Result<Trace, String>>,
}

struct DetailMsg {
    expert: (usize, usize),
    ids: Vec<u32>,
    trace: Result<Trace, String>,
}

impl ExpertsView {
    fn ablate(&mut self, expert: (usize, usize), ids: Vec<u32>, cx: &Cx<'_>) {
        self.detail = Some(Detail {
            expert,
            ids: ids.clone(),
            trace: None,
        });
        // On top of the interventions the shared run had, so that the two runs differ by this alone.
        let mut iv = cx.interventions.active();
        iv.push(expert_ablation(expert.0, expert.1, AblationMode::Zero));
        cx.worker.task("experts", move |t| {
            let capture = Capture {
                experts: true,
                ..Capture::default()
            };
            let trace = Trace::run_with(t.model, t.backend, &ids, capture, 5, &iv)
                .map_err(|e| e.to_string());
            t.send(DetailMsg { expert, ids, trace });
        });
    }

    fn detail_ui(&self, ui: &mut Ui, base: &Trace, cx: &mut Cx<'_>) {
        let Some(d) = &self.detail else {
            ui.label(
                RichText::new(
                    "Click an expert to ablate it and see which tokens it helps predict.",
                )
                .weak(),
            );
            return;
        };
        let (layer, expert) = d.expert;
        ui.strong(format!("expert {layer}.{expert} ablated"));
        match &d.trace {
            None => {
                ui.spinner();
            }
            Some(Err(e)) => super::error_line(ui, e),
            Some(Ok(abl)) => {
                strip::delta_run(ui, base, abl);
                if ui
                    .button("apply everywhere")
                    .on_hover_text("ablate this expert in every view")
                    .clicked()
                {
                    cx.interventions.set(
                        "experts",
                        format!("zero-ablate expert {layer}.{expert}"),
                        vec![expert_ablation(layer, expert, AblationMode::Zero)],
                    );
                }
            }
        }
    }
}

/// Token i's experts in every mixture-of-experts layer, for its hover card.
fn routing_card(ui: &mut Ui, trace: &Trace, i: usize) {
    let Some(routing) = &trace.output.routing else {
        return;
    };
    for (l, r) in routing.iter().enumerate() {
        if let Some(r) = r {
            let chosen: Vec<String> = r
                .chosen(i)
                .iter()
                .map(|(e, w)| format!("{e} ({w:.2})"))
                .collect();
            ui.label(format!("layer {l}: {}", chosen.join(", ")));
        }
    }
}

impl View for ExpertsView {
    fn id(&self) -> &'static str {
        "experts"
    }

    fn label(&self) -> &'static str {
        "Experts"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(l) = super::causal_model(ui, cx, "Expert routing (which needs a decoder)") else {
            return;
        };
        let Some(x) = l.model.spec.experts else {
            ui.label(format!(
                "{} is a dense model: every token goes through the same MLP, so there is no routing to show. Open a mixture-of-experts model (Qwen3-MoE, such as Qwen3-30B-A3B) to see which experts each token goes to.",
                l.model.spec.architecture
            ));
            return;
        };
        let Some(run) = cx.run else {
            ui.spinner();
            return;
        };
        let trace = &run.trace;
        if run.id != self.run_id {
            self.run_id = run.id;
            self.detail = None;
        }
        let Some((layers, usage)) = trace.expert_usage() else {
            ui.label("This run did not capture the routing; edit the prompt to run it again.");
            return;
        };
        ui.label(format!(
            "{} experts per layer, top {} per token: the share of the prompt's {} tokens routed to each expert (click one to ablate it)",
            x.count,
            x.top_k,
            trace.tokens.len()
        ));
        let n = l.model.spec.n_layers;
        let mut rows = vec![Vec::new(); n];
        for (layer, row) in layers.iter().zip(&usage) {
            rows[*layer] = row.clone();
        }
        let cols: Vec<String> = (0..x.count).map(|e| e.to_string()).collect();
        let selected: Vec<(usize, usize)> = self.detail.iter().map(|d| d.expert).collect();
        let mut clicked = None;
        ui.columns(2, |c| {
            c[0].set_min_height(70.0 + n as f32 * 14.0);
            clicked = Grid {
                name: "expert usage grid",
                rows: &rows,
                n_rows: n,
                col_labels: &cols,
                bound: 1.0,
                sequential: true,
                colormap: Colormap::Viridis,
                selected: &selected,
                format: &|v| format!("{:.0}%", v * 100.0),
            }
            .show(&mut c[0]);
            self.detail_ui(&mut c[1], trace, cx);
        });
        ui.separator();
        ui.label("The prompt by surprisal; hover a token for its experts in each layer.");
        let strip = build::text_strip(trace, build::TextColors::Surprisal);
        strip::draw(ui, &strip.tokens, &|ui, i| routing_card(ui, trace, i));
        if let Some(c) = clicked {
            let moe = rows.get(c.row).is_some_and(|r| !r.is_empty());
            if moe {
                let ids = trace.tokens.iter().map(|t| t.id).collect();
                self.ablate((c.row, c.col), ids, cx);
            }
        }
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        build::expert_usage_figure(&cx.run?.trace, &cx.model_name())
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        match cx.loaded {
            Some(l) if l.model.spec.experts.is_some() => cx.run.is_some(),
            _ => true,
        }
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, _cx: &mut Cx<'_>) {
        if let Ok(m) = msg.downcast::<DetailMsg>() {
            if let Some(d) = self
                .detail
                .as_mut()
                .filter(|d| d.expert == m.expert && d.ids == m.ids)
            {
                d.trace = Some(m.trace);
            }
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        self.detail = None;
    }

    crate::view_any!();
}
