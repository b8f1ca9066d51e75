using System.Diagnostics;
using System.Globalization;
using System.Text;
using Drydock.Hypervisor;
using Drydock.Nbd;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Restore;

namespace Drydock.Benchmarks.Transfer;

/// <summary>
/// Issue 6, rows 1 and 2 (docs/BENCHMARKS.md "Backup and restore (issue 6)"). Backup: <see cref="BackupPipeline"/> from a
/// qemu-nbd export of a raw image in page cache into a new local repository with default settings (2 MiB chunks, zstd
/// level 1, AES-256-GCM, fsync on), full level, committed — against <c>nbdcopy URI null:</c> on the same export.
/// Restore: <see cref="RestorePipeline.ToFileAsync"/> of the last point to a new raw / qcow2 image — against
/// <c>qemu-img convert</c> of the original image. Drydock runs in this process (as a silo runs it, after a warm-up);
/// the peers are child processes. Tools alternate within each run.
/// </summary>
internal sealed class BackupRestoreBenchmark(long size, int runs, string work, TextWriter log)
{
    private const string Passphrase = "benchmark";
    private static readonly Guid Domain = Guid.Parse("00000000-0000-0000-0000-0000000000b6");

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(work);
        var loadBefore = Load();
        var backupRows = new List<Row>();
        var restoreRows = new List<Row>();
        var images = new (string Name, Func<string, long, CancellationToken, Task<string>> Make, double BackupTarget)[]
        {
            ("incompressible (random)", BenchImages.RandomAsync, 0.6),
            ("mixed (40 % random, 30 % text-like, 15 % zeros, 15 % holes)", BenchImages.MixedAsync, 0.8),
        };
        foreach (var (name, make, backupTarget) in images)
        {
            await log.WriteLineAsync($"{name}: preparing the image in {work}");
            var image = await make(work, size, cancellationToken);
            await ShellAsync($"cat '{image}' > /dev/null", cancellationToken);
            var zstdBytes = long.Parse((await ShellAsync($"zstd -1 -T0 -q -c '{image}' | wc -c", cancellationToken)).Trim(), CultureInfo.InvariantCulture);
            var repository = Path.Combine(work, "repo");
            await using (var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, Format = ImageFormat.Raw, ReadOnly = true }, cancellationToken))
            {
                backupRows.Add(await CompareBackupAsync(name, server.Uri, repository, zstdBytes, backupTarget, cancellationToken));
            }

            restoreRows.Add(await CompareRestoreAsync(name, image, repository, DiskImageFormat.Raw, cancellationToken));
            restoreRows.Add(await CompareRestoreAsync(name, image, repository, DiskImageFormat.Qcow2, cancellationToken));
            Directory.Delete(repository, recursive: true);
        }

        return Report(backupRows, restoreRows, loadBefore, Load());
    }

    private async Task<Row> CompareBackupAsync(string name, string uri, string repository, long zstdBytes, double target, CancellationToken cancellationToken)
    {
        string[] peerCommand = ["nbdcopy", uri, "null:"];
        var endpoint = NbdUri.Parse(uri);

        // One untimed run of each: page cache, server, JIT.
        await TimeAsync(peerCommand, cancellationToken);
        await BackupOnceAsync(endpoint, repository, cancellationToken);
        var peer = new List<double>();
        var ours = new List<double>();
        BackupSample last = default;
        for (var run = 0; run < runs; run++)
        {
            peer.Add(await TimeAsync(peerCommand, cancellationToken));
            last = await BackupOnceAsync(endpoint, repository, cancellationToken);
            ours.Add(last.Seconds);
            await log.WriteLineAsync(Invariant($"backup {name} run {run + 1}/{runs}: nbdcopy {peer[^1]:0.000} s, drydock {ours[^1]:0.000} s"));
        }

        var note = Invariant($"stored {last.StoredBytes / (double)size:0.000} of the image (`zstd -1`: {zstdBytes / (double)size:0.000}); {last.Result.ChunksRead} chunks read, {last.Result.ChunksZero} zero");
        return new Row(name, $"`{string.Join(' ', peerCommand)}`", Median(peer), Median(ours), target, note);
    }

    // A new repository each time (a second backup into the same one would be all dedup); the last one is kept for restores.
    private async Task<BackupSample> BackupOnceAsync(NbdUri endpoint, string path, CancellationToken cancellationToken)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }

        using var repository = await BackupRepository.InitAsync(
            new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = path }),
            Passphrase,
            new RepositoryInitOptions { KdfIterations = 1000 },
            cancellationToken: cancellationToken);
        var clock = Stopwatch.StartNew();
        DiskBackupResult result;
        await using (var point = await repository.BeginPointAsync(new PointRequest { DomainId = Domain, DomainName = "bench", WriterId = "bench" }, cancellationToken))
        {
            var writer = await point.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "bench-vda", VirtualSize = size, Level = DiskBackupLevel.Full }, cancellationToken);
            var capture = new CaptureDisk
            {
                Target = "vda",
                Endpoint = endpoint,
                VirtualSize = (ulong)size,
                Identity = "bench-vda",
                FullReason = FullReadReason.NotRequested,
            };
            result = await new BackupPipeline().RunAsync(capture, writer, cancellationToken: cancellationToken);
            await point.CommitAsync(cancellationToken);
        }

        var seconds = clock.Elapsed.TotalSeconds;
        var stored = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        return new BackupSample(seconds, result, stored);
    }

    private async Task<Row> CompareRestoreAsync(string name, string image, string repository, DiskImageFormat format, CancellationToken cancellationToken)
    {
        var extension = format == DiskImageFormat.Raw ? "raw" : "qcow2";
        var output = Path.Combine(work, "restored." + extension);
        string[] peerCommand = ["qemu-img", "convert", "-f", "raw", "-O", extension, image, output];
        var peer = new List<double>();
        var ours = new List<double>();

        // Warm-up, and a check that the restored image reads back as the original.
        File.Delete(output);
        await TimeAsync(peerCommand, cancellationToken);
        File.Delete(output);
        await RestoreOnceAsync(repository, output, format, cancellationToken);
        await ShellAsync($"qemu-img compare -q -f raw -F {extension} '{image}' '{output}'", cancellationToken);
        for (var run = 0; run < runs; run++)
        {
            File.Delete(output);
            peer.Add(await TimeAsync(peerCommand, cancellationToken));
            File.Delete(output);
            ours.Add(await RestoreOnceAsync(repository, output, format, cancellationToken));
            await log.WriteLineAsync(Invariant($"restore {name} to {extension} run {run + 1}/{runs}: qemu-img {peer[^1]:0.000} s, drydock {ours[^1]:0.000} s"));
        }

        File.Delete(output);
        return new Row($"{name} → {extension}", $"`{string.Join(' ', peerCommand).Replace(work, "$W", StringComparison.Ordinal)}`", Median(peer), Median(ours), 0.8, "");
    }

    private static async Task<double> RestoreOnceAsync(string path, string output, DiskImageFormat format, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        using var repository = await BackupRepository.OpenAsync(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = path }), Passphrase, cancellationToken: cancellationToken);
        var point = await repository.OpenLatestAsync("default", Domain, cancellationToken: cancellationToken)
            ?? throw new InvalidOperationException("no point in the benchmark repository");
        var disk = await point.OpenDiskAsync("vda", cancellationToken);
        await new RestorePipeline().ToFileAsync(disk, output, format, cancellationToken: cancellationToken);
        return clock.Elapsed.TotalSeconds;
    }

    private string Report(List<Row> backups, List<Row> restores, string loadBefore, string loadAfter)
    {
        var text = new StringBuilder();
        text.Append(Invariant($"Image size {size / BenchImages.MiB} MiB in page cache, served read-only by `qemu-nbd -r -f raw -t -e 16` over a Unix socket; "));
        text.Append(Invariant($"median of {runs} alternating runs per tool after one warm-up each; {Environment.ProcessorCount} cores shared with other engineers; load average {loadBefore} at the start, {loadAfter} at the end. "));
        text.Append("Drydock runs in the benchmark process (Release, after its warm-up, as a silo runs it); the peers are child processes. ");
        text.Append("Backup: `BackupPipeline.RunAsync` (default options: 4 connections, 16 reads in flight) of a full disk into a new local repository under `$W` ");
        text.Append("(default settings: 2 MiB chunks, zstd level 1, AES-256-GCM, fsync on), begin point → commit. ");
        text.Append("Restore: open the repository and the point, `RestorePipeline.ToFileAsync` to a new image in `$W` (fsync'd, sparse); the peer converts the original image. ");
        text.Append("Ratio = peer time ÷ Drydock time (throughput ratio; > 1: Drydock faster).\n\n");
        text.Append("| backup: image | peer command | nbdcopy s | Drydock s | ratio | target | met | notes |\n");
        text.Append("|---|---|---:|---:|---:|---|---|---|\n");
        foreach (var row in backups)
        {
            text.Append(Invariant($"| {row.Name} | {row.PeerCommand} | {row.Peer:0.000} | {row.Ours:0.000} | {row.Ratio:0.00} | ≥ {row.Target:0.0} | {(row.Met ? "yes" : "**no**")} | {row.Note} |\n"));
        }

        text.Append("\n| restore: image → format | peer command | qemu-img s | Drydock s | ratio | target | met |\n");
        text.Append("|---|---|---:|---:|---:|---|---|\n");
        foreach (var row in restores)
        {
            text.Append(Invariant($"| {row.Name} | {row.PeerCommand} | {row.Peer:0.000} | {row.Ours:0.000} | {row.Ratio:0.00} | ≥ {row.Target:0.0} | {(row.Met ? "yes" : "**no**")} |\n"));
        }

        return text.ToString();
    }

    private static async Task<string> ShellAsync(string command, CancellationToken cancellationToken)
    {
        var result = await ProcessRunner.RunAsync("bash", ["-c", "set -o pipefail; " + command], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(15) }, cancellationToken);
        return result.StandardOutput;
    }

    internal static async Task<double> TimeAsync(string[] command, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        await ProcessRunner.RunAsync(command[0], command[1..], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(15) }, cancellationToken);
        return clock.Elapsed.TotalSeconds;
    }

    internal static string Load() => File.ReadAllText("/proc/loadavg").Split(' ')[0];

    internal static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private readonly record struct BackupSample(double Seconds, DiskBackupResult Result, long StoredBytes);

    private sealed record Row(string Name, string PeerCommand, double Peer, double Ours, double Target, string Note)
    {
        public double Ratio => Peer / Ours;

        public bool Met => Ratio >= Target;
    }
}
