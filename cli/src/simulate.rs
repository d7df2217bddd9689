//! `sluice simulate [DIR] --events FILE`: the real engine on a virtual
//! clock over a JSONL event file, one JSON line per decision on stdout and
//! a summary on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, Utc};
use miette::{miette, IntoDiagnostic};

use engine::events::EventFile;
use engine::output::{Kind, Line, Sink};
use engine::simulate::{Props, SimOptions, Simulation};
use journeys::limits;

use crate::Format;

/// Which lines to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Only `kind: send` lines.
    Sends,
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The config repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// A JSONL file of events (FORMAT.md §4), in any order: it is sorted by
    /// `ts` (stably). `-` reads standard input.
    #[arg(long)]
    pub events: PathBuf,
    /// Where the virtual clock starts (RFC 3339; default: the first event).
    /// Earlier events only build profiles and history.
    #[arg(long)]
    pub start: Option<String>,
    /// Where it stops: RFC 3339, or `+DUR` after the start (default: 30
    /// days after the last event).
    #[arg(long)]
    pub until: Option<String>,
    /// Only the events of the first N distinct users (in file order).
    #[arg(long)]
    pub users: Option<usize>,
    /// `sends`: print only `kind: send` lines.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// `human`: a readable summary on stderr; `json`: the summary as one
    /// JSON document on stderr. The lines on stdout are JSON either way.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Keep the store in this directory instead of a temporary one (with
    /// its message log and report journal: `sluice report --store DIR`
    /// reads it; running again on it resumes where it stopped).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Users kept decoded in the engine's write-back cache (a cached user
    /// takes ~1.5-2 KB: the default holds the benchmark's 100,000 users in
    /// ~200 MB, without decoding and encoding them as they come and go).
    #[arg(long, hide = true, default_value_t = 100_000)]
    pub cache_users: usize,
    /// sled's page cache, in MiB.
    #[arg(long, hide = true, default_value_t = 32)]
    pub sled_cache_mb: u64,
}

/// Prints lines as JSON on a thread of its own (the engine's thread only
/// hands them over in batches), in order.
/// What the printing thread is given: lines, or a request to flush
/// everything so far and say so.
enum Print {
    Lines(Vec<Line>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

struct Stdout {
    batch: Vec<Line>,
    only_sends: bool,
    tx: Option<std::sync::mpsc::SyncSender<Print>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

const BATCH: usize = 1024;

impl Stdout {
    fn new(only_sends: bool) -> Stdout {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Print>(16);
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            for msg in rx {
                match msg {
                    Print::Lines(batch) => {
                        for line in batch {
                            let ok = serde_json::to_writer(&mut out, &line).is_ok()
                                && out.write_all(b"\n").is_ok();
                            if !ok {
                                // A closed pipe (`| head`): stop writing, keep simulating.
                                return;
                            }
                        }
                    }
                    Print::Flush(done) => {
                        if out.flush().is_err() {
                            return;
                        }
                        let _ = done.send(());
                    }
                }
            }
            let _ = out.flush();
        });
        Stdout {
            batch: Vec::with_capacity(BATCH),
            only_sends,
            tx: Some(tx),
            writer: Some(writer),
        }
    }
}

impl Sink for Stdout {
    fn line(&mut self, line: Line) {
        if self.only_sends && line.kind != Kind::Send {
            return;
        }
        self.batch.push(line);
        if self.batch.len() >= BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            if let Some(tx) = &self.tx {
                if tx.send(Print::Lines(batch)).is_err() {
                    self.tx = None;
                }
            }
        }
    }

    fn flush(&mut self) {
        let Some(tx) = &self.tx else { return };
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if tx.send(Print::Lines(batch)).is_err() || tx.send(Print::Flush(done)).is_err() {
            self.tx = None;
            return;
        }
        let _ = wait.recv();
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Print::Lines(std::mem::take(&mut self.batch)));
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

pub(crate) fn parse_ts(what: &str, s: &str) -> miette::Result<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            miette!("--{what} `{s}` is not an RFC 3339 timestamp such as 2026-03-02T09:00:00Z: {e}")
        })?;
    limits::check_instant(t).map_err(|e| miette!("--{what} {e}"))
}

/// The events as a regular file, which the index reads more than once:
/// the file itself, or a temporary copy of standard input (`-`) or of a
/// pipe (`/dev/stdin`, `<(…)`), deleted on drop.
struct EventSource {
    path: PathBuf,
    spool: Option<(tempfile::NamedTempFile, String)>,
}

impl EventSource {
    fn open(arg: &Path) -> std::io::Result<EventSource> {
        let stdin = arg == Path::new("-");
        let piped = !stdin && std::fs::metadata(arg).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if !stdin && !piped {
            return Ok(EventSource {
                path: arg.to_owned(),
                spool: None,
            });
        }
        let mut spool = tempfile::NamedTempFile::new()?;
        if stdin {
            std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())?;
        } else {
            std::io::copy(&mut std::fs::File::open(arg)?, spool.as_file_mut())?;
        }
        spool.as_file_mut().flush()?;
        let shown = if stdin {
            "stdin".to_owned()
        } else {
            arg.display().to_string()
        };
        Ok(EventSource {
            path: spool.path().to_owned(),
            spool: Some((spool, shown)),
        })
    }

    /// A message about the events, naming what the user gave, not the copy.
    fn name_in(&self, message: String) -> String {
        match &self.spool {
            Some((_, shown)) => message.replace(&self.path.display().to_string(), shown),
            None => message,
        }
    }
}

pub fn run(args: SimulateArgs) -> miette::Result<ExitCode> {
    let Some(config) = crate::load_config(&args.dir) else {
        return Ok(ExitCode::from(1));
    };
    if args.events != Path::new("-") {
        if let Err(message) = crate::input_file::check("the events file", &args.events) {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
    }
    let source = match EventSource::open(&args.events) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot read the events file `{}`: {}",
                args.events.display(),
                crate::input_file::reason(&e)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let size = std::fs::metadata(&source.path).map_or(0, |m| m.len());
    let checking = crate::progress::bar(
        size,
        "checking events {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let opened = EventFile::open_with_progress(&source.path, args.users, &mut |n| {
        if let Some(b) = &checking {
            b.set_position(n);
        }
    });
    if let Some(b) = &checking {
        b.finish_and_clear();
    }
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}", source.name_in(e.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    if file.is_empty() {
        let shown = match &source.spool {
            Some((_, shown)) => shown.clone(),
            None => args.events.display().to_string(),
        };
        eprintln!(
            "warning: the events file `{shown}` holds no events{}",
            if args.start.is_some() {
                ""
            } else {
                ": nothing to simulate (give --start and --until to run schedules without events)"
            }
        );
    }
    let start = match &args.start {
        Some(s) => parse_ts("start", s)?,
        None => file.first_ts().unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    };
    let until = match args.until.as_deref() {
        Some(rel) if rel.starts_with('+') => {
            let d = journeys::scalar::parse_duration(&rel[1..])
                .map_err(|e| miette!("--until `{rel}`: {e}"))?;
            limits::add(start, d.to_chrono()).map_err(|e| miette!("--until `{rel}` is {e}"))?
        }
        Some(abs) if DateTime::parse_from_rfc3339(abs).is_err() => {
            return Err(miette!(
                "--until `{abs}` is neither an RFC 3339 timestamp such as 2026-03-16T00:00:00Z nor `+DURATION` after the start such as +14d"
            ))
        }
        Some(abs) => parse_ts("until", abs)?,
        None => file
            .last_ts()
            .map_or(start, limits::default_until)
            .max(start),
    };
    limits::check_horizon(start, until).map_err(|e| miette!("the simulation {e}"))?;
    let sink = Stdout::new(args.only == Some(Only::Sends));
    let options = SimOptions {
        store: args.store.clone(),
        cache_users: args.cache_users,
        sled_cache_bytes: args.sled_cache_mb << 20,
        log_messages: args.store.is_some(),
        ..SimOptions::default()
    };
    let began = Instant::now();
    let mut sim =
        Simulation::new(config, start, &options, Box::new(sink)).map_err(|e| miette!("{e}"))?;
    let recovered = sim.recovery().to_string();
    if !recovered.is_empty() {
        eprintln!("warning: {recovered}");
    }
    let bar = crate::progress::bar(
        file.len() as u64,
        "simulating {bar:40} {human_pos}/{human_len} events eta {eta}{msg}",
    );
    // Events are read and parsed on a thread of their own, and dropped
    // there too: the engine's thread hands each spent batch back (freeing
    // an event's maps and strings was 3% of its time).
    let events = file.events().into_diagnostic()?;
    let failed = std::thread::scope(|scope| -> miette::Result<bool> {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<Vec<_>>(16);
        scope.spawn(move || {
            let fresh = || match spent_rx.try_recv() {
                Ok(mut spent) => {
                    spent.clear();
                    spent
                }
                Err(_) => Vec::with_capacity(BATCH),
            };
            let mut batch = fresh();
            for ev in events {
                let stop = ev.is_err();
                // Properties in the record's form, converted here rather
                // than on the engine's thread.
                batch.push(ev.map(|ev| {
                    let props = Props::of(&ev);
                    (ev, props)
                }));
                let full = batch.len() >= BATCH || stop;
                if full {
                    let sent = tx.send(std::mem::replace(&mut batch, fresh()));
                    if sent.is_err() || stop {
                        return;
                    }
                }
            }
            let _ = tx.send(batch);
        });
        for mut batch in rx {
            if let Some(b) = &bar {
                b.inc(batch.len() as u64);
            }
            for item in batch.iter_mut() {
                let (ev, props) = match item {
                    Ok((ev, props)) => (&*ev, std::mem::take(props)),
                    Err(e) => {
                        eprintln!("error: {}", source.name_in(e.to_string()));
                        return Ok(true);
                    }
                };
                if ev.ts > until {
                    // Sorted: nothing after this happens before the end.
                    return Ok(false);
                }
                sim.event_converted(ev, Some(props))
                    .map_err(|e| miette!("{e}"))?;
            }
            // Back to the reader to be dropped; if it is behind, here.
            let _ = spent_tx.try_send(batch);
        }
        Ok(false)
    })?;
    if let Some(b) = &bar {
        b.set_message(format!(
            "; running the clock to {}",
            engine::clock::format_ts(until.timestamp_millis())
        ));
    }
    let finished = if failed {
        None
    } else {
        Some(sim.finish(until).map_err(|e| miette!("{e}")))
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let Some(summary) = finished else {
        return Ok(ExitCode::from(1));
    };
    let summary = summary?;
    let secs = began.elapsed().as_secs_f64();
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&summary).into_diagnostic()?;
            if let Some(m) = v.as_object_mut() {
                m.insert("seconds".into(), serde_json::json!(secs));
            }
            eprintln!("{v}");
        }
        Format::Human => {
            eprintln!(
                "simulated {} → {} in {secs:.2}s ({:.0} events/s)",
                engine::clock::format_ts(start.timestamp_millis()),
                engine::clock::format_ts(until.timestamp_millis()),
                summary.events as f64 / secs.max(1e-9)
            );
            eprintln!("{summary}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
