//! The machine's cache sizes, which the plan and the kernels size their blocks and bands by.

/// L2 cache bytes assumed where the system does not say (1 MiB: Zen 4/5, Intel server cores).
pub const DEFAULT_L2_BYTES: u64 = 1 << 20;

/// The first core's L2 cache size, from Linux's sysfs (`None` elsewhere).
pub fn l2_bytes() -> Option<u64> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let level = read("level")?;
        let kind = read("type")?;
        if level.trim() != "2" || kind.trim() == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            _ => return None,
        };
        digits.parse::<u64>().ok().map(|n| n * scale)
    })
}

/// [`l2_bytes`], or [`DEFAULT_L2_BYTES`], read once per process.
pub fn l2_bytes_or_default() -> u64 {
    static L2: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *L2.get_or_init(|| l2_bytes().unwrap_or(DEFAULT_L2_BYTES))
}
