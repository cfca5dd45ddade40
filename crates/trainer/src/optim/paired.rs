//! The paired forward of a two-point ZO step ([`super::zo::ZoForward::Paired`]): the losses at
//! theta + mu z and theta - mu z from one forward over the batch twice, with the two points'
//! weights as replicas ([`crate::models::replicas`]).
//!
//! Each trainable tensor gets a stack `[2, ...]` beside theta. Per direction, one out-of-place
//! pass writes `theta + mu z` into replica 0 and one writes `theta - mu z` into replica 1
//! ([`crate::perturb::ParamSet::writing_to`]); theta itself is never perturbed, so nothing is
//! restored afterwards. Coordinates a DP-ZOPO mask leaves out are never written: the replicas
//! hold theta's values there from their construction, and the methods change theta only on the
//! masked coordinates while the mask stands ([`super::params::TrainableParams::set_masks`]
//! drops the replicas with the mask).
//!
//! Several cells run as threads of one process can go further: a [`ForwardGroup`] joins their
//! paired forwards into one forward over all their batches, each cell's two points as two of
//! its `2K` replicas ([`with_group`]).
//!
//! Cost: two more copies of the trainable tensors (for SmolLM2-135M in f32, 1.1 GB), so this is
//! for small models; the sequential forward keeps MeZO's inference memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tch::{Kind, TchError, Tensor};

use super::{axpy_z, OptimError, ParamSet, Result};
use crate::batch::{Batch, ExampleBatch};
use crate::model::LabelWordModel;
use crate::models::replicas::{with_replicas, WeightReplicas};

/// The two replicas of theta's trainable tensors and the passes that fill them.
#[derive(Debug)]
pub struct PairedWeights {
    /// `(name, theta, [2, ...] stack)` of every non-empty tensor, in the set's order.
    stacks: Vec<(String, Tensor, Tensor)>,
    replicas: WeightReplicasHandle,
    plus: ParamSet,
    minus: ParamSet,
}

/// [`WeightReplicas`] behind `Debug`.
struct WeightReplicasHandle(WeightReplicas);

impl std::fmt::Debug for WeightReplicasHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightReplicas({})", self.0.count())
    }
}

impl PairedWeights {
    /// Replicas of every tensor of `set` (theta's z-generator view), both starting equal to
    /// theta. Tensors a mask leaves out entirely are copied too (never written again), so that
    /// a [`ForwardGroup`] can run other cells' weights in their place.
    pub fn new(set: &ParamSet) -> Result<Self> {
        let mut stacks = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for entry in set.entries().iter().filter(|e| e.numel > 0) {
                let theta = entry.tensor.f_detach()?;
                let stacked = Tensor::f_stack(&[&theta, &theta], 0)?;
                stacks.push((entry.name.clone(), entry.tensor.shallow_clone(), stacked));
            }
            Ok(())
        })?;
        let written = |r: i64| -> Result<Vec<(String, Tensor)>> {
            let touched = |name: &str| {
                set.entries()
                    .iter()
                    .find(|e| e.name == name)
                    .is_some_and(|e| !matches!(e.selection, crate::perturb::Selection::Untouched))
            };
            stacks
                .iter()
                .filter(|(name, _, _)| touched(name))
                .map(|(name, _, stacked)| Ok((name.clone(), stacked.f_select(0, r)?)))
                .collect()
        };
        let plus = set.writing_to(written(0)?)?;
        let minus = set.writing_to(written(1)?)?;
        let replicas = WeightReplicas::new(
            2,
            stacks
                .iter()
                .map(|(name, theta, stacked)| (name.clone(), theta, stacked.shallow_clone()))
                .collect(),
        )?;
        Ok(Self {
            stacks,
            replicas: WeightReplicasHandle(replicas),
            plus,
            minus,
        })
    }

    /// Per-example losses of `batch` at theta + mu z(seed) and at theta - mu z(seed), from one
    /// forward of the batch twice over, or from the group's forward when this thread is in a
    /// [`ForwardGroup`] (label-word batches only). Theta is not touched.
    pub fn losses(
        &self,
        model: &dyn LabelWordModel,
        batch: &dyn ExampleBatch,
        seed: u64,
        mu: f64,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        axpy_z(&self.plus, &[(seed, mu)])?;
        axpy_z(&self.minus, &[(seed, -mu)])?;
        if let (Some(group), Some(labels)) = (current_group(), batch.as_labels()) {
            return group.losses(self, model, labels);
        }
        self.own_losses(model, batch)
    }

    /// The losses at the two points as they stand, from this cell's own forward.
    fn own_losses(
        &self,
        model: &dyn LabelWordModel,
        batch: &dyn ExampleBatch,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let doubled = batch.repeated(2)?;
        let scores = tch::no_grad(|| with_replicas(&self.replicas.0, || doubled.scores(model)))?;
        let values = loss_values(&scores, doubled.labels())?;
        let half = values.len() / 2;
        Ok((values[..half].to_vec(), values[half..].to_vec()))
    }
}

/// Per-example cross-entropy of `scores` as host f64 values.
fn loss_values(scores: &Tensor, labels: &Tensor) -> Result<Vec<f64>> {
    let losses = super::loss::losses_from_logits(scores, labels)?;
    Ok(Vec::<f64>::try_from(
        losses
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?,
    )?)
}

/// Paired forwards of up to `size` cells, each run by its own thread of one process, joined into
/// one forward. A thread in the group ([`with_group`]) hands its cell's replicas and batch to
/// the group and waits. The group expects a thread back while it is a regular: while less time
/// has passed since its last hand-in than the larger of `patience` and three times the interval
/// between its last two. A waiting thread runs the joint forward for the cells present with
/// its label words once every regular with those words has handed in, or `size` cells have;
/// while a joint forward is running, the others wait for its cells to come back. Cells in
/// lockstep thus share every forward, and a cell that stops handing in (evaluating, between
/// runs, finished) holds the others up at most once, for its absence time:
/// - replica stacks concatenated, cell k's two points as replicas 2k and 2k + 1;
/// - batches padded to the longest length (on the right, masked) and the largest size (with
///   copies of their first example, whose losses are dropped).
///
/// Each joint forward copies the cells' stacks into one `[2K, ...]` stack per tensor: 2K model
/// copies written per forward (SmolLM2-135M in f32, K = 4: 4.3 GB, about 2 ms of an H200's
/// bandwidth), a cost to weigh against the launches saved when it is timed. A cell that goes
/// alone runs its own paired forward, without the copy.
///
/// The results are those of the cells' own paired forwards up to the rounding of products of
/// another shape; padding is masked from every real token. The cells must run one checkpoint:
/// the tensors none of them trains come from the model of the thread that runs the forward.
pub struct ForwardGroup {
    size: usize,
    patience: Duration,
    state: Mutex<GroupState>,
    changed: Condvar,
}

/// A cell's losses at its two points, or why the joint forward failed.
type CellOutcome = std::result::Result<(Vec<f64>, Vec<f64>), String>;

#[derive(Default)]
struct GroupState {
    next_ticket: u64,
    pending: Vec<Submission>,
    done: HashMap<u64, CellOutcome>,
    members: HashMap<ThreadId, Member>,
    /// Joint forwards running now.
    in_flight: usize,
    forwards: u64,
    cells_served: u64,
}

/// A thread that has handed in a forward: when it last did, the time between its last two
/// hand-ins, and its cell's label words.
struct Member {
    last: Instant,
    interval: Option<Duration>,
    label_words: Vec<i64>,
}

/// One cell's share of a joint forward.
struct Submission {
    ticket: u64,
    member: ThreadId,
    label_words: Vec<i64>,
    stacks: Vec<(String, Tensor)>,
    batch: Batch,
}

/// What a waiting thread does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Run the joint forward of the cells present.
    Run,
    /// Wait for a change, at most this long.
    Wait(Duration),
}

/// The patience of the groups `repro` forms ([`ForwardGroup::new`]): cells in lockstep on a GPU
/// hand in well within it, and a cell that stops (to evaluate, between runs) holds the others
/// up at most this long, or three of its step intervals.
pub const PATIENCE: Duration = Duration::from_millis(200);

/// How long a thread waits in all for its cell's losses (a guard against a stuck group).
const RESULT_PATIENCE: Duration = Duration::from_secs(600);

thread_local! {
    static GROUP: RefCell<Option<Arc<ForwardGroup>>> = const { RefCell::new(None) };
}

/// Runs `work` with this thread's paired forwards going through `group`.
pub fn with_group<T>(group: &Arc<ForwardGroup>, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<ForwardGroup>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            GROUP.with(|g| *g.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(GROUP.with(|g| g.borrow_mut().replace(group.clone())));
    work()
}

fn current_group() -> Option<Arc<ForwardGroup>> {
    GROUP.with(|g| g.borrow().clone())
}

fn group_error(reason: impl Into<String>) -> OptimError {
    OptimError::Torch(TchError::Kind(reason.into()))
}

/// A poisoned lock: another thread of the group panicked while holding it.
fn poisoned<T>(_: T) -> OptimError {
    group_error("a thread of the forward group panicked")
}

impl ForwardGroup {
    /// A group of up to `size` cells per forward; a thread stays a regular for at least
    /// `patience` after each hand-in.
    ///
    /// # Errors
    /// `size` below 1.
    pub fn new(size: usize, patience: Duration) -> Result<Self> {
        if size < 1 {
            return Err(OptimError::invalid("cells", size, "must be >= 1"));
        }
        Ok(Self {
            size,
            patience,
            state: Mutex::new(GroupState::default()),
            changed: Condvar::new(),
        })
    }

    /// The group's rule (type docs) for the thread `me`, whose submission `ticket` with
    /// `label_words` is pending or taken, at `now`.
    fn next(
        &self,
        state: &GroupState,
        me: ThreadId,
        ticket: u64,
        label_words: &[i64],
        now: Instant,
    ) -> Next {
        let one_second = Next::Wait(Duration::from_secs(1));
        if !state.pending.iter().any(|s| s.ticket == ticket) {
            // Taken into a forward that another thread runs: woken when it ends.
            return one_second;
        }
        let present = |id: &ThreadId| {
            state
                .pending
                .iter()
                .any(|s| s.member == *id && s.label_words == label_words)
        };
        let alike = state
            .pending
            .iter()
            .filter(|s| s.label_words == label_words)
            .count();
        if alike >= self.size {
            return Next::Run;
        }
        // When each regular that has not handed in stops being one.
        let absent_at = state
            .members
            .iter()
            .filter(|(id, m)| **id != me && m.label_words == label_words && !present(id))
            .map(|(_, m)| m.last + self.patience.max(3 * m.interval.unwrap_or_default()))
            .filter(|&at| at > now)
            .min();
        match absent_at {
            None => Next::Run,
            Some(_) if state.in_flight > 0 => one_second,
            Some(at) => Next::Wait(at - now),
        }
    }

    /// The most cells one forward of the group joins.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The forwards this group has run and the cells' paired forwards they served: cells
    /// served / forwards is the mean number of cells per joint forward.
    ///
    /// # Errors
    /// A thread of the group panicked while holding its lock.
    pub fn forwards(&self) -> Result<(u64, u64)> {
        let state = self.state.lock().map_err(poisoned)?;
        Ok((state.forwards, state.cells_served))
    }

    fn losses(
        &self,
        own: &PairedWeights,
        model: &dyn LabelWordModel,
        batch: &Batch,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let label_words =
            Vec::<i64>::try_from(batch.label_word_ids.f_to_device(tch::Device::Cpu)?)?;
        let me = std::thread::current().id();
        let mut state = self.state.lock().map_err(poisoned)?;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let arrived = Instant::now();
        let interval = state.members.get(&me).map(|m| arrived - m.last);
        state.members.insert(
            me,
            Member {
                last: arrived,
                interval,
                label_words: label_words.clone(),
            },
        );
        state.pending.push(Submission {
            ticket,
            member: me,
            label_words: label_words.clone(),
            stacks: own
                .stacks
                .iter()
                .map(|(name, _, stacked)| (name.clone(), stacked.shallow_clone()))
                .collect(),
            batch: batch.shallow_clone(),
        });
        self.changed.notify_all();
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result.map_err(group_error);
            }
            if arrived.elapsed() > RESULT_PATIENCE {
                state.pending.retain(|s| s.ticket != ticket);
                return Err(group_error(format!(
                    "no joint paired forward returned within {} s",
                    RESULT_PATIENCE.as_secs()
                )));
            }
            match self.next(&state, me, ticket, &label_words, Instant::now()) {
                Next::Wait(wait) => {
                    state = self
                        .changed
                        .wait_timeout(state, wait.max(Duration::from_micros(100)))
                        .map_err(poisoned)?
                        .0;
                }
                Next::Run => {
                    let mut taken = Vec::new();
                    let mut kept = Vec::new();
                    for s in state.pending.drain(..) {
                        if s.label_words == label_words && taken.len() < self.size {
                            taken.push(s);
                        } else {
                            kept.push(s);
                        }
                    }
                    state.pending = kept;
                    state.in_flight += 1;
                    drop(state);
                    // Alone: its own forward, without copying its replicas into a joint stack.
                    let results = match taken.as_slice() {
                        [only] if only.ticket == ticket => {
                            own.own_losses(model, &only.batch).map(|l| vec![l])
                        }
                        _ => joint_losses(own, model, &taken),
                    };
                    state = self.state.lock().map_err(poisoned)?;
                    state.in_flight -= 1;
                    state.forwards += 1;
                    state.cells_served += taken.len() as u64;
                    for (k, s) in taken.iter().enumerate() {
                        let result = match &results {
                            Ok(all) => Ok(all[k].clone()),
                            Err(e) => Err(format!("joint paired forward: {e}")),
                        };
                        state.done.insert(s.ticket, result);
                    }
                    self.changed.notify_all();
                }
            }
        }
    }
}

/// `t [rows, ...]` with `rows` grown to `size` by copies of its first row.
fn pad_rows(t: &Tensor, size: i64) -> std::result::Result<Tensor, TchError> {
    let rows = t.size()[0];
    if rows == size {
        return Ok(t.shallow_clone());
    }
    let first = Tensor::f_zeros([size - rows], (Kind::Int64, t.device()))?;
    Tensor::f_cat(&[t, &t.f_index_select(0, &first)?], 0)
}

/// The joint forward of `cells` (module docs), with `own`'s tensors as the model's weights:
/// each cell's (plus, minus) losses.
fn joint_losses(
    own: &PairedWeights,
    model: &dyn LabelWordModel,
    cells: &[Submission],
) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let rows = cells
        .iter()
        .map(|c| c.batch.len() as i64)
        .max()
        .unwrap_or(0);
    let length = cells
        .iter()
        .map(|c| c.batch.input_ids.size()[1])
        .max()
        .unwrap_or(0);
    let mut parts: [Vec<Tensor>; 4] = Default::default();
    for cell in cells {
        let b = &cell.batch;
        let widen = |t: &Tensor| t.f_constant_pad_nd([0, length - t.size()[1]]);
        let padded = [
            pad_rows(&widen(&b.input_ids)?, rows)?,
            pad_rows(&widen(&b.attention_mask)?, rows)?,
            pad_rows(&b.positions, rows)?,
            pad_rows(&b.labels, rows)?,
        ];
        for (part, t) in parts.iter_mut().zip(padded) {
            part.push(t.shallow_clone());
            part.push(t);
        }
    }
    let [input_ids, attention_mask, positions, labels] = parts.map(|p| Tensor::f_cat(&p, 0));
    let joint = Batch {
        input_ids: input_ids?,
        attention_mask: attention_mask?,
        positions: positions?,
        labels: labels?,
        label_word_ids: cells[0].batch.label_word_ids.shallow_clone(),
    };
    let mut entries = Vec::with_capacity(own.stacks.len());
    for (name, theta, _) in &own.stacks {
        let stacks: Vec<&Tensor> = cells
            .iter()
            .map(|c| {
                c.stacks
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| group_error(format!("a cell of the group has no tensor {name}")))
            })
            .collect::<Result<_>>()?;
        entries.push((name.clone(), theta, Tensor::f_cat(&stacks, 0)?));
    }
    let replicas = WeightReplicas::new(2 * cells.len() as i64, entries)?;
    let scores = tch::no_grad(|| with_replicas(&replicas, || joint.scores(model)))?;
    let values = loss_values(&scores, &joint.labels)?;
    let block = rows as usize;
    Ok(cells
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let n = c.batch.len();
            let plus = &values[2 * k * block..2 * k * block + n];
            let minus = &values[(2 * k + 1) * block..(2 * k + 1) * block + n];
            (plus.to_vec(), minus.to_vec())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other_thread() -> ThreadId {
        std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap()
    }

    fn submission(ticket: u64, member: ThreadId, label_words: &[i64]) -> Submission {
        let empty = || Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu));
        Submission {
            ticket,
            member,
            label_words: label_words.to_vec(),
            stacks: Vec::new(),
            batch: Batch {
                input_ids: empty(),
                attention_mask: empty(),
                positions: empty(),
                labels: empty(),
                label_word_ids: empty(),
            },
        }
    }

    /// The group's rule: wait for a regular that has not handed in until it stops being one
    /// (the larger of the patience and three intervals after its last hand-in), never while a
    /// forward runs; go once every regular with the same label words is present, or `size`
    /// cells are; other tasks' threads are not waited for.
    #[test]
    fn a_cell_waits_for_the_regulars_of_its_task_only() {
        let group = ForwardGroup::new(3, Duration::from_millis(100)).unwrap();
        let (me, b, c) = (std::thread::current().id(), other_thread(), other_thread());
        let now = Instant::now();
        let words = [5i64, 7];
        let mut state = GroupState::default();
        let member = |ago: u64, interval: u64, label_words: &[i64]| Member {
            last: now - Duration::from_millis(ago),
            interval: Some(Duration::from_millis(interval)),
            label_words: label_words.to_vec(),
        };
        state.members.insert(me, member(0, 20, &words));
        state.pending.push(submission(0, me, &words));
        // b handed in 10 ms ago, every 20 ms: a regular for another 90 ms (the patience).
        state.members.insert(b, member(10, 20, &words));
        assert_eq!(
            group.next(&state, me, 0, &words, now),
            Next::Wait(Duration::from_millis(90))
        );
        // Slower steps stretch it: every 50 ms, so three intervals (150 ms) from its last.
        state.members.insert(b, member(10, 50, &words));
        assert_eq!(
            group.next(&state, me, 0, &words, now),
            Next::Wait(Duration::from_millis(140))
        );
        // While a forward runs, its cells come back right after it.
        state.in_flight = 1;
        assert_eq!(
            group.next(&state, me, 0, &words, now),
            Next::Wait(Duration::from_secs(1))
        );
        state.in_flight = 0;
        // b present: go.
        state.pending.push(submission(1, b, &words));
        assert_eq!(group.next(&state, me, 0, &words, now), Next::Run);
        // b gone quiet for 200 ms (evaluating, finished): no longer waited for.
        state.pending.pop();
        state.members.insert(b, member(200, 20, &words));
        assert_eq!(group.next(&state, me, 0, &words, now), Next::Run);
        // A regular of another task is not waited for.
        state.members.insert(c, member(5, 20, &[1, 2, 3]));
        assert_eq!(group.next(&state, me, 0, &words, now), Next::Run);
        // `size` cells present go at once, whoever else is a regular.
        state.members.insert(b, member(10, 20, &words));
        state.pending.push(submission(2, c, &words));
        state.pending.push(submission(3, other_thread(), &words));
        assert_eq!(group.next(&state, me, 0, &words, now), Next::Run);
        // A submission already taken into another thread's forward waits for its result.
        state.pending.retain(|s| s.ticket != 0);
        assert_eq!(
            group.next(&state, me, 0, &words, now),
            Next::Wait(Duration::from_secs(1))
        );
    }
}
