//! Splitting one run over processes: `--shard I/N` or `--shard auto` (a Slurm job array, a
//! Kubernetes Indexed Job), `--seeds`, and `--devices`. Shard I of N runs the jobs whose
//! position in the expanded list (units x seeds) is congruent to I mod N.

use anyhow::{bail, ensure, Context, Result};

/// `--shard`: given, or to be read from the scheduler's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    Auto,
}

/// Shard `index` (0-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The shard's summary file: `summary.<I>-of-<N>.json`.
    pub fn summary_name(&self) -> String {
        format!("summary.{}-of-{}.json", self.index, self.count)
    }

    /// `summary.<I>-of-<N>.json` back into its shard.
    pub fn from_summary_name(name: &str) -> Option<Shard> {
        let (i, n) = name.strip_prefix("summary.")?.strip_suffix(".json")?.split_once("-of-")?;
        let shard = Shard { index: i.parse().ok()?, count: n.parse().ok()? };
        (shard.index < shard.count && shard.summary_name() == name).then_some(shard)
    }

    /// Whether the job at `position` of the expanded list is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl ShardSpec {
    /// `I/N` (0-based, I < N) or `auto`.
    pub fn parse(s: &str) -> Result<ShardSpec> {
        if s.trim() == "auto" {
            return Ok(ShardSpec::Auto);
        }
        let (i, n) = s.split_once('/').with_context(|| format!("'{s}' is not I/N (shard I of N, 0-based) or auto"))?;
        let num = |t: &str| t.trim().parse::<usize>().with_context(|| format!("'{s}': '{t}' is not a whole number"));
        let (index, count) = (num(i)?, num(n)?);
        ensure!(count >= 1 && index < count, "'{s}': the shard index must be 0 to {} (0-based)", count.saturating_sub(1));
        Ok(ShardSpec::Fixed(Shard { index, count }))
    }

    /// The shard, `auto` read through `env` (the process environment in the binary).
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        match *self {
            ShardSpec::Fixed(s) => Ok(s),
            ShardSpec::Auto => from_env(env),
        }
    }
}

/// `--shard auto`: a Slurm job array (I = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, N =
/// SLURM_ARRAY_TASK_COUNT), else a Kubernetes Indexed Job (I = JOB_COMPLETION_INDEX, N =
/// DGNAM_SHARDS, set to the Job's completions).
fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
    let num = |name: &str| -> Result<Option<usize>> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("--shard auto: {name}={v:?} is not a whole number")),
        }
    };
    let shard = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.context("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN is not")?;
        let count = num("SLURM_ARRAY_TASK_COUNT")?.context("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        ensure!(id >= min, "--shard auto: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}");
        Shard { index: id - min, count }
    } else if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let count = num("DGNAM_SHARDS")?
            .context("--shard auto: JOB_COMPLETION_INDEX is set but DGNAM_SHARDS is not (set it to the Job's completions)")?;
        Shard { index, count }
    } else {
        bail!(
            "--shard auto: neither a Slurm job array (SLURM_ARRAY_TASK_ID) nor a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) is in the environment; give --shard I/N"
        )
    };
    // A Slurm array with a step (--array=0-9:2) has ids that are not min..min+count.
    ensure!(
        shard.count >= 1 && shard.index < shard.count,
        "--shard auto: shard {} of {} is out of range (a Slurm array must be contiguous, e.g. --array=0-7)",
        shard.index,
        shard.count
    );
    Ok(shard)
}

/// `--seeds`: `A..B` (inclusive) or `0,3,7`, no repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeds(pub Vec<u64>);

impl Seeds {
    pub fn parse(s: &str) -> Result<Seeds> {
        let num = |t: &str| t.trim().parse::<u64>().with_context(|| format!("'{s}': '{t}' is not a seed (a whole number)"));
        let seeds: Vec<u64> = match s.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                ensure!(a <= b, "'{s}': the range A..B needs A <= B (both included)");
                ensure!(b - a < 1_000_000, "'{s}': more than a million seeds");
                (a..=b).collect()
            }
            None => s.split(',').map(num).collect::<Result<_>>()?,
        };
        for (i, x) in seeds.iter().enumerate() {
            ensure!(!seeds[..i].contains(x), "'{s}': seed {x} is given twice");
        }
        Ok(Seeds(seeds))
    }
}

/// `--devices 0,1,..`: one worker process per entry; an index may repeat (`0,0`: two
/// workers on one GPU, or two CPU workers with `--device cpu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Devices(pub Vec<usize>);

impl Devices {
    pub fn parse(s: &str) -> Result<Devices> {
        let list = s
            .split(',')
            .map(|t| t.trim().parse::<usize>().with_context(|| format!("'{s}': '{t}' is not a device index")))
            .collect::<Result<Vec<_>>>()?;
        ensure!(!list.is_empty(), "'{s}': no devices");
        Ok(Devices(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn shards_parse_and_own_their_positions() {
        assert_eq!(ShardSpec::parse("1/3").unwrap(), ShardSpec::Fixed(Shard { index: 1, count: 3 }));
        assert_eq!(ShardSpec::parse("auto").unwrap(), ShardSpec::Auto);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(ShardSpec::parse(bad).is_err(), "{bad}");
        }
        let s = Shard { index: 1, count: 3 };
        assert_eq!((0..8).filter(|&p| s.owns(p)).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(s.summary_name(), "summary.1-of-3.json");
        assert_eq!(Shard::from_summary_name("summary.1-of-3.json"), Some(s));
        for other in ["summary.json", "summary.3-of-3.json", "summary.01-of-3.json", "summary.1-of-3.json.tmp"] {
            assert_eq!(Shard::from_summary_name(other), None, "{other}");
        }
    }

    #[test]
    fn auto_reads_slurm_then_kubernetes_else_fails_clearly() {
        let slurm = [("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert_eq!(ShardSpec::Auto.resolve(&env_of(&slurm)).unwrap(), Shard { index: 2, count: 4 });
        let k8s = [("JOB_COMPLETION_INDEX", "3"), ("DGNAM_SHARDS", "8")];
        assert_eq!(ShardSpec::Auto.resolve(&env_of(&k8s)).unwrap(), Shard { index: 3, count: 8 });
        let e = ShardSpec::Auto.resolve(&env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"), "{e}");
        let e = ShardSpec::Auto.resolve(&env_of(&[("JOB_COMPLETION_INDEX", "3")])).unwrap_err().to_string();
        assert!(e.contains("DGNAM_SHARDS"), "{e}");
        let stepped = [("SLURM_ARRAY_TASK_ID", "8"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "5")];
        assert!(ShardSpec::Auto.resolve(&env_of(&stepped)).unwrap_err().to_string().contains("contiguous"));
        let fixed = ShardSpec::Fixed(Shard { index: 0, count: 2 });
        assert_eq!(fixed.resolve(&env_of(&k8s)).unwrap(), Shard { index: 0, count: 2 });
    }

    #[test]
    fn seeds_and_devices_parse() {
        assert_eq!(Seeds::parse("0..3").unwrap(), Seeds(vec![0, 1, 2, 3]));
        assert_eq!(Seeds::parse("0,3,7").unwrap(), Seeds(vec![0, 3, 7]));
        assert_eq!(Seeds::parse("5..5").unwrap(), Seeds(vec![5]));
        for bad in ["3..1", "1,1", "a", "1..", ""] {
            assert!(Seeds::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Devices::parse("0,0").unwrap(), Devices(vec![0, 0]));
        assert!(Devices::parse("0,x").is_err() && Devices::parse("").is_err());
    }
}
