//! Energy of one generation: Linux RAPL counters when readable, else CPU time × watts.

use std::path::PathBuf;

use switchyard_providers::Energy;

/// Reads energy before and after a generation on the thread that runs it.
pub struct EnergyMeter {
    rapl: Vec<RaplZone>,
    rapl_start: Vec<u64>,
    cpu_start: Option<f64>,
}

/// One package-level RAPL zone (`intel-rapl:N`, not its `:N:M` sub-zones, which the package
/// already includes).
#[derive(Debug, Clone)]
pub struct RaplZone {
    energy_uj: PathBuf,
    max_uj: u64,
}

/// The readable package zones under `/sys/class/powercap` (see the kernel's powercap docs,
/// <https://www.kernel.org/doc/html/latest/power/powercap/powercap.html>). Often unreadable
/// in containers or without root, and absent on non-Intel/AMD machines.
pub fn rapl_zones() -> Vec<RaplZone> {
    let Ok(dir) = std::fs::read_dir("/sys/class/powercap") else {
        return Vec::new();
    };
    let mut zones = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_package = name
            .strip_prefix("intel-rapl:")
            .is_some_and(|rest| !rest.contains(':'));
        if !is_package {
            continue;
        }
        let path = entry.path();
        let energy_uj = path.join("energy_uj");
        let max_uj = read_u64(&path.join("max_energy_range_uj")).unwrap_or(u64::MAX);
        if read_u64(&energy_uj).is_some() {
            zones.push(RaplZone { energy_uj, max_uj });
        }
    }
    zones
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl EnergyMeter {
    /// Starts measuring on the calling thread.
    pub fn start(rapl: &[RaplZone]) -> Self {
        let rapl_start: Vec<u64> = rapl.iter().filter_map(|z| read_u64(&z.energy_uj)).collect();
        let rapl = if rapl_start.len() == rapl.len() {
            rapl.to_vec()
        } else {
            Vec::new()
        };
        EnergyMeter {
            rapl,
            rapl_start,
            cpu_start: thread_cpu_seconds(),
        }
    }

    /// Energy since `start`, read on the same thread. `threads` is how many kernel threads
    /// worked alongside this one (they run in lock-step with it), `watts_per_core` the
    /// per-core power assumption for the estimate.
    pub fn finish(&self, threads: usize, watts_per_core: f64) -> Option<Energy> {
        if !self.rapl.is_empty() {
            let mut uj = 0u64;
            for (z, start) in self.rapl.iter().zip(&self.rapl_start) {
                let end = read_u64(&z.energy_uj)?;
                // The counter wraps at max_energy_range_uj.
                uj += if end >= *start {
                    end - start
                } else {
                    z.max_uj - start + end
                };
            }
            return Some(Energy {
                wh: uj as f64 / 3.6e9,
                method: "measured-rapl",
            });
        }
        let cpu = thread_cpu_seconds()? - self.cpu_start?;
        Some(Energy {
            wh: cpu * threads.max(1) as f64 * watts_per_core / 3600.0,
            method: "estimated-cpu-time",
        })
    }
}

/// CPU time (user + system) of the calling thread, from `getrusage(RUSAGE_THREAD)`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // getrusage has no safe wrapper in std; it only writes the struct we pass.
pub fn thread_cpu_seconds() -> Option<f64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD is valid on Linux ≥ 2.6.26.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (and it was zeroed before).
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(ru.ru_utime) + secs(ru.ru_stime))
}

#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_estimate_grows_with_work() {
        let m = EnergyMeter::start(&[]);
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let e = m.finish(2, 15.0).unwrap();
        assert_eq!(e.method, "estimated-cpu-time");
        assert!(e.wh > 0.0, "{e:?}");
    }
}
