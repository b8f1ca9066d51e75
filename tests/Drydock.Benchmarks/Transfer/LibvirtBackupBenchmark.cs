using System.Diagnostics;
using System.Globalization;
using System.Text;
using Drydock.Hypervisor.Libvirt;
using Drydock.Hypervisor.Libvirt.Interop;
using Drydock.Repository;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.TestKit.Libvirt;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;

namespace Drydock.Benchmarks.Transfer;

/// <summary>
/// Issue 6, row 4 (docs/BENCHMARKS.md "Backup and restore (issue 6)"): backups of a running libvirt domain (TCG, paused,
/// one qcow2 disk with the "mixed" content) by Drydock's <see cref="BackupJob"/> with the libvirt driver (in this process)
/// and by <c>virtnbdbackup -z</c>, alternating. Two identical domains, one per tool, so neither tool meets the other's
/// checkpoints. Full backups (all checkpoints deleted first, a new repository / output directory each run), then
/// incrementals after 1 % of the disk was written as 1 MiB runs, and as scattered 4 KiB writes, through the virtio device
/// (HMP <c>qemu-io</c>, the same writes into both domains).
/// </summary>
internal sealed class LibvirtBackupBenchmark(long size, int runs, string work, TextWriter log)
{
    private const string Passphrase = "benchmark";

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(work);
        var loadBefore = BackupRestoreBenchmark.Load();
        var image = await BenchImages.MixedAsync(work, size, cancellationToken);
        var fixture = new LibvirtFixture();
        await fixture.InitializeAsync();
        try
        {
            await using var ours = await CreateDomainAsync(fixture, image, cancellationToken);
            await using var theirs = await CreateDomainAsync(fixture, image, cancellationToken);
            await using var driver = await LibvirtDriver.ConnectAsync(
                new LibvirtDriverOptions { SocketDirectory = fixture.SocketDirectory, ScratchDirectory = fixture.ScratchDirectory },
                cancellationToken: cancellationToken);
            using var connection = LibvirtConnection.Open(LibvirtDaemon.Uri);
            var repositoryPath = Path.Combine(work, "libvirt-repo");
            var peerOutput = Path.Combine(work, "virtnbdbackup");

            // Full: run 0 is the warm-up.
            var fulls = new List<(Pair Pair, long Stored, long PeerStored, double QemuCpu, double PeerQemuCpu)>();
            for (var run = 0; run <= runs; run++)
            {
                await DeleteCheckpointsAsync(ours.Name, cancellationToken);
                await DeleteCheckpointsAsync(theirs.Name, cancellationToken);
                DeleteDirectory(peerOutput);
                var peerQemu = CpuSeconds(theirs.QemuPid());
                var peer = await BackupRestoreBenchmark.TimeAsync(PeerCommand(theirs.Name, "full", peerOutput), cancellationToken);
                peerQemu = CpuSeconds(theirs.QemuPid()) - peerQemu;
                var peerStored = DirectorySize(peerOutput);
                DeleteDirectory(repositoryPath);
                using var repository = await BackupRepository.InitAsync(
                    new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = repositoryPath }), Passphrase, new RepositoryInitOptions { KdfIterations = 1000 }, cancellationToken: cancellationToken);
                var qemu = CpuSeconds(ours.QemuPid());
                var (sample, _) = await DrydockAsync(driver, repository, ours.Name, RequestedLevel.Full, cancellationToken);
                qemu = CpuSeconds(ours.QemuPid()) - qemu;
                var stored = DirectorySize(repositoryPath);
                await log.WriteLineAsync(Invariant($"full run {run}/{runs}: virtnbdbackup {peer.Seconds:0.000} s ({peerStored / 1048576.0:0.0} MiB, its QEMU {peerQemu:0.00} CPU-s), drydock {sample.Seconds:0.000} s (CPU {sample.CpuSeconds:0.00} s, {stored / 1048576.0:0.0} MiB, its QEMU {qemu:0.00} CPU-s)"));
                if (run > 0)
                {
                    fulls.Add((new Pair(peer, sample, 0), stored, peerStored, qemu, peerQemu));
                }
            }

            // Incrementals on top of the last full of each tool: each run dirties a fresh 1 % of the disk.
            var dirtyBytes = size / 100;
            var random = new Random(66);
            var incrementals = new List<(string Pattern, List<Pair> Pairs, long PeerGrowth, long OurGrowth)>();
            using (var repository = await BackupRepository.OpenAsync(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = repositoryPath }), Passphrase, cancellationToken: cancellationToken))
            {
                foreach (var (pattern, length) in new[] { ("1 MiB runs", 1 << 20), ("scattered 4 KiB writes", 4096) })
                {
                    var pairs = new List<Pair>();
                    long peerGrowth = 0;
                    long ourGrowth = 0;
                    for (var run = 0; run <= runs; run++)
                    {
                        var count = (int)(dirtyBytes / length);
                        var slots = new HashSet<long>();
                        while (slots.Count < count)
                        {
                            slots.Add(random.NextInt64(size / length));
                        }

                        var clock = Stopwatch.StartNew();
                        var fill = (byte)(0x61 + (run % 20));
                        foreach (var domain in new[] { ours.Name, theirs.Name })
                        {
                            using var handle = connection.LookupDomain(domain) ?? throw new InvalidOperationException($"domain {domain} is gone");
                            foreach (var slot in slots.Order())
                            {
                                LibvirtConnection.QemuMonitorCommand(
                                    handle,
                                    Invariant($"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x{fill:x2} {slot * length} {length}\""),
                                    QemuNativeMethods.MonitorCommandHmp);
                            }
                        }

                        await log.WriteLineAsync(Invariant($"{pattern} run {run}/{runs}: {count} writes into both domains in {clock.Elapsed.TotalSeconds:0.0} s"));
                        var peerBefore = DirectorySize(peerOutput);
                        var peer = await BackupRestoreBenchmark.TimeAsync(PeerCommand(theirs.Name, "inc", peerOutput), cancellationToken);
                        var ourBefore = DirectorySize(repositoryPath);
                        var (sample, bytesRead) = await DrydockAsync(driver, repository, ours.Name, RequestedLevel.Incremental, cancellationToken);
                        await log.WriteLineAsync(Invariant($"{pattern} run {run}/{runs}: virtnbdbackup {peer.Seconds:0.000} s, drydock {sample.Seconds:0.000} s, read {bytesRead / 1048576.0:0.0} MiB for {count * (long)length / 1048576.0:0.0} MiB dirty"));
                        if (run > 0)
                        {
                            pairs.Add(new Pair(peer, sample, bytesRead / (double)(count * (long)length)));
                            peerGrowth += DirectorySize(peerOutput) - peerBefore;
                            ourGrowth += DirectorySize(repositoryPath) - ourBefore;
                        }
                    }

                    incrementals.Add((pattern, pairs, peerGrowth / runs, ourGrowth / runs));
                }
            }

            return Report(fulls, incrementals, dirtyBytes, loadBefore);
        }
        finally
        {
            await fixture.DisposeAsync();
        }
    }

    private static string[] PeerCommand(string domain, string level, string output) =>
        ["virtnbdbackup", "-d", domain, "-l", level, "-z", "-n", "-o", output];

    private static async Task<(BackupRestoreBenchmark.Sample Sample, long BytesRead)> DrydockAsync(LibvirtDriver driver, BackupRepository repository, string domain, RequestedLevel level, CancellationToken cancellationToken)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var result = await new BackupJob(driver, repository).RunAsync(new BackupJobRequest { Domain = domain, Level = level, AllowFallback = false }, cancellationToken: cancellationToken);
        var sample = new BackupRestoreBenchmark.Sample(clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        return (sample, result.Disks.Sum(d => d.Transfer.BytesRead));
    }

    private static async Task<LibvirtTestDomain> CreateDomainAsync(LibvirtFixture fixture, string image, CancellationToken cancellationToken)
    {
        var domain = await fixture.CreateDomainAsync([new TestDiskSpec("vda", new FileInfo(image).Length)], start: false, cancellationToken);
        var disk = domain.Images["vda"];
        File.Delete(disk);
        await ProcessRunner.RunAsync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", image, disk], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(10) }, cancellationToken);
        await LibvirtDaemon.VirshAsync(["start", "--paused", domain.Name], cancellationToken);
        return domain;
    }

    private static async Task DeleteCheckpointsAsync(string domain, CancellationToken cancellationToken)
    {
        var roots = (await LibvirtDaemon.VirshAsync(["checkpoint-list", domain, "--roots", "--name"], cancellationToken)).StandardOutput;
        foreach (var root in roots.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            await LibvirtDaemon.VirshAsync(["checkpoint-delete", domain, root, "--children"], cancellationToken);
        }
    }

    // User + system CPU seconds a process has used so far (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s).
    private static double CpuSeconds(int pid)
    {
        var stat = File.ReadAllText(Invariant($"/proc/{pid}/stat"));
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0;
    }

    private static long DirectorySize(string path) =>
        Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;

    private static void DeleteDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }

    private string Report(List<(Pair Pair, long Stored, long PeerStored, double QemuCpu, double PeerQemuCpu)> fulls, List<(string Pattern, List<Pair> Pairs, long PeerGrowth, long OurGrowth)> incrementals, long dirtyBytes, string loadBefore)
    {
        static double Med(IEnumerable<double> values) => BackupRestoreBenchmark.Median([.. values]);
        var text = new StringBuilder();
        text.Append(Invariant($"Two identical TCG domains (libvirt 9.0, QEMU 7.2, started paused, no guest agent), one qcow2 disk of {size / BenchImages.MiB} MiB converted from the \"mixed\" image above; "));
        text.Append(Invariant($"median of {runs} alternating runs per row after one warm-up; {Environment.ProcessorCount} shared cores, load average {loadBefore} at the start, {BackupRestoreBenchmark.Load()} at the end. "));
        text.Append("Drydock: `BackupJob` with the libvirt driver in the benchmark process after a warm-up, as a worker silo runs it (`drydock backup` runs the same job plus .NET start-up, ≈ 0.2 s), into a local repository with default settings (zstd 1, AES-256-GCM, fsync on; incrementals patch chunks changed in at most half from the parent's copy); a new repository for each full. ");
        text.Append("virtnbdbackup 1.9.15 is a Python process (its start-up is in its time); `-z` is its lz4 compression; `-n` only hides its progress bar. ");
        text.Append("Before each full, every checkpoint of both domains is deleted (untimed). ");
        text.Append(Invariant($"Incrementals: before each run, {dirtyBytes / 1048576.0:0.0} MiB (1 %) at fresh random places, written into both domains through the virtio device with HMP `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P …\"` (untimed).\n\n"));
        var drydockCpu = Med(fulls.Select(f => f.Pair.Ours.CpuSeconds));
        var qemuCpu = Med(fulls.Select(f => f.QemuCpu));
        var peerTime = Med(fulls.Select(f => f.Pair.Peer.Seconds));
        text.Append(Invariant($"Full, CPU: the domain's QEMU (serving the NBD export, reading the qcow2) used {qemuCpu:0.00} CPU-s during Drydock's run and {Med(fulls.Select(f => f.PeerQemuCpu)):0.00} during virtnbdbackup's. "));
        text.Append(Invariant($"Drydock's run needs {drydockCpu:0.00} + {qemuCpu:0.00} CPU-s on {Environment.ProcessorCount} cores, so it cannot take less than {(drydockCpu + qemuCpu) / Environment.ProcessorCount:0.00} s ({(drydockCpu + qemuCpu) / Environment.ProcessorCount / peerTime:0.00} of the peer's time) however well it overlaps; "));
        text.Append(Invariant($"the target (≤ {peerTime / 3:0.00} s) needs both together under {Environment.ProcessorCount * peerTime / 3:0.00} CPU-s on these cores.\n\n"));
        text.Append("| backup | peer command | virtnbdbackup s | Drydock s | Drydock ÷ peer time | target | met | Drydock CPU s | peer CPU s | stored MiB (Drydock / peer) | bytes read ÷ dirty |\n");
        text.Append("|---|---|---:|---:|---:|---|---|---:|---:|---|---:|\n");
        var fullRatio = Med(fulls.Select(f => f.Pair.Ours.Seconds)) / Med(fulls.Select(f => f.Pair.Peer.Seconds));
        var stored = Med(fulls.Select(f => (double)f.Stored));
        var peerStored = Med(fulls.Select(f => (double)f.PeerStored));
        var fullMet = fullRatio <= 1.0 / 3 && stored <= peerStored;
        text.Append(Invariant($"| full | `virtnbdbackup -d DOM -l full -z -n -o DIR` | {Med(fulls.Select(f => f.Pair.Peer.Seconds)):0.00} | {Med(fulls.Select(f => f.Pair.Ours.Seconds)):0.00} | {fullRatio:0.00} | ≤ 0.33 time, stored ≤ peer | {(fullMet ? "yes" : "**no**")} | {Med(fulls.Select(f => f.Pair.Ours.CpuSeconds)):0.00} | {Med(fulls.Select(f => f.Pair.Peer.CpuSeconds)):0.00} | {stored / 1048576:0.0} / {peerStored / 1048576:0.0} | |\n"));
        foreach (var (pattern, pairs, peerGrowth, ourGrowth) in incrementals)
        {
            var ratio = Med(pairs.Select(p => p.Ours.Seconds)) / Med(pairs.Select(p => p.Peer.Seconds));
            var read = Med(pairs.Select(p => p.ReadRatio));
            var isRuns = pattern.Contains("runs", StringComparison.Ordinal);
            var target = isRuns ? "read ≤ 1.05 × dirty" : "(time vs peer)";
            var met = isRuns ? (read <= 1.05 ? "yes" : "**no**") : ratio <= 1 ? "faster" : "slower";
            text.Append(Invariant($"| incremental, 1 % as {pattern} | `virtnbdbackup -d DOM -l inc -z -n -o DIR` | {Med(pairs.Select(p => p.Peer.Seconds)):0.00} | {Med(pairs.Select(p => p.Ours.Seconds)):0.00} | {ratio:0.00} | {target} | {met} | {Med(pairs.Select(p => p.Ours.CpuSeconds)):0.00} | {Med(pairs.Select(p => p.Peer.CpuSeconds)):0.00} | {ourGrowth / 1048576.0:0.0} / {peerGrowth / 1048576.0:0.0} | {read:0.00} |\n"));
        }

        return text.ToString();
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private sealed record Pair(BackupRestoreBenchmark.Sample Peer, BackupRestoreBenchmark.Sample Ours, double ReadRatio);
}
