using System.Diagnostics;
using System.Globalization;
using System.Text;
using Drydock.Hypervisor;
using Drydock.Nbd;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage.FileSystem;
using Drydock.Storage.InMemory;
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
                backupRows.Add(await CompareBackupAsync(name, image, server.Uri, repository, zstdBytes, backupTarget, cancellationToken));
            }

            restoreRows.Add(await CompareRestoreAsync(name, image, repository, DiskImageFormat.Raw, cancellationToken));
            restoreRows.Add(await CompareRestoreAsync(name, image, repository, DiskImageFormat.Qcow2, cancellationToken));
            Directory.Delete(repository, recursive: true);
        }

        return Report(backupRows, restoreRows, loadBefore, Load());
    }

    private async Task<Row> CompareBackupAsync(string name, string image, string uri, string repository, long zstdBytes, double target, CancellationToken cancellationToken)
    {
        string[] peerCommand = ["nbdcopy", uri, "null:"];
        var endpoint = NbdUri.Parse(uri);

        // One untimed run of each: page cache, server, JIT.
        await TimeAsync(peerCommand, cancellationToken);
        var warm = await BackupOnceAsync(endpoint, repository, inMemory: false, cancellationToken);
        await BackupOnceAsync(endpoint, repository, inMemory: true, cancellationToken);
        await FormatWorkOnceAsync(image, size, cancellationToken);

        // The storage floor: the bytes Drydock stores, written once with one fdatasync (no chunking, no metadata).
        var floorBlocks = (warm.StoredBytes + (2 * BenchImages.MiB) - 1) / (2 * BenchImages.MiB);
        var floorOutput = Path.Combine(work, "floor.out");
        string[] floorCommand = ["dd", "if=" + image, "of=" + floorOutput, "bs=2M", Invariant($"count={floorBlocks}"), "oflag=direct", "conv=fdatasync", "status=none"];
        var peer = new List<Sample>();
        var ours = new List<Sample>();
        var memory = new List<Sample>();
        var floor = new List<Sample>();
        var format = new List<Sample>();
        BackupSample last = default;
        for (var run = 0; run < runs; run++)
        {
            await SyncAsync(cancellationToken);
            peer.Add(await TimeAsync(peerCommand, cancellationToken));
            await SyncAsync(cancellationToken);
            last = await BackupOnceAsync(endpoint, repository, inMemory: false, cancellationToken);
            ours.Add(last.Sample);
            await SyncAsync(cancellationToken);
            memory.Add((await BackupOnceAsync(endpoint, repository, inMemory: true, cancellationToken)).Sample);
            await SyncAsync(cancellationToken);
            floor.Add(await TimeAsync(floorCommand, cancellationToken));
            File.Delete(floorOutput);
            format.Add(await FormatWorkOnceAsync(image, size, cancellationToken));
            await log.WriteLineAsync(Invariant($"backup {name} run {run + 1}/{runs}: nbdcopy {peer[^1].Seconds:0.000} s, drydock {ours[^1].Seconds:0.000} s (CPU {ours[^1].CpuSeconds:0.00}), in-memory store {memory[^1].Seconds:0.000} s, dd floor {floor[^1].Seconds:0.000} s, format work CPU {format[^1].CpuSeconds:0.00} s"));
        }

        var note = Invariant($"stored {last.StoredBytes / (double)size:0.000} of the image (`zstd -1`: {zstdBytes / (double)size:0.000}); {last.Result.ChunksRead} chunks read, {last.Result.ChunksZero} zero");
        return new Row(name, $"`{string.Join(' ', peerCommand)}`", Median(peer), Median(ours), target, note)
        {
            Memory = Median(memory),
            Floor = Median(floor),
            Format = Median(format),
            FloorCommand = string.Join(' ', floorCommand).Replace(work, "$W", StringComparison.Ordinal),
        };
    }

    // A new repository each time (a second backup into the same one would be all dedup); the last one is kept for restores.
    private async Task<BackupSample> BackupOnceAsync(NbdUri endpoint, string path, bool inMemory, CancellationToken cancellationToken)
    {
        if (Directory.Exists(path) && !inMemory)
        {
            Directory.Delete(path, recursive: true);
        }

        var memory = new InMemoryBlobStore();
        using var repository = await BackupRepository.InitAsync(
            inMemory ? memory : new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = path }),
            Passphrase,
            new RepositoryInitOptions { KdfIterations = 1000 },
            cancellationToken: cancellationToken);
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var (result, _) = await FullBackupAsync(repository, Domain, endpoint, size, "bench", cancellationToken);
        var sample = new Sample(clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        var stored = inMemory ? 0 : Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        return new BackupSample(sample, result, stored);
    }

    /// <summary>A full backup of disk vda of <paramref name="endpoint"/> with the default pipeline, committed as a new point.</summary>
    internal static async Task<(DiskBackupResult Result, PointManifest Manifest)> FullBackupAsync(BackupRepository repository, Guid domain, NbdUri endpoint, long size, string name, CancellationToken cancellationToken)
    {
        await using var point = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = name, WriterId = name }, cancellationToken);
        var writer = await point.AddDiskAsync(new DiskRequest { Name = "vda", Identity = name + "-vda", VirtualSize = size, Level = DiskBackupLevel.Full }, cancellationToken);
        var capture = new CaptureDisk
        {
            Target = "vda",
            Endpoint = endpoint,
            VirtualSize = (ulong)size,
            Identity = name + "-vda",
            FullReason = FullReadReason.NotRequested,
        };
        var result = await new BackupPipeline().RunAsync(capture, writer, cancellationToken: cancellationToken);
        return (result, await point.CommitAsync(cancellationToken));
    }

    /// <summary>A full point of disk vda written from an image file (page cache) through the repository writer, no NBD: the
    /// format's work (zero check, chunk id, compression, encryption) on the same bytes.</summary>
    internal static async Task<DiskStats> WriteImageAsync(BackupRepository repository, Guid domain, string image, long size, string name, CancellationToken cancellationToken)
    {
        await using var point = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = name, WriterId = name }, cancellationToken);
        var writer = await point.AddDiskAsync(new DiskRequest { Name = "vda", Identity = name + "-vda", VirtualSize = size, Level = DiskBackupLevel.Full }, cancellationToken);
        await using (var file = new FileStream(image, FileMode.Open, FileAccess.Read, FileShare.Read, 0))
        {
            await writer.WriteAllAsync(file, cancellationToken);
        }

        return (await point.CommitAsync(cancellationToken)).Disks[0].Stats;
    }

    // The format's CPU alone: the image's chunks through the writer into a store that drops them (no NBD, no storage).
    private static async Task<Sample> FormatWorkOnceAsync(string image, long size, CancellationToken cancellationToken)
    {
        using var repository = await BackupRepository.InitAsync(new ChunkDroppingStore(new InMemoryBlobStore()), Passphrase, new RepositoryInitOptions { KdfIterations = 1000 }, cancellationToken: cancellationToken);
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        await WriteImageAsync(repository, Domain, image, size, "format", cancellationToken);
        return new Sample(clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
    }

    private async Task<Row> CompareRestoreAsync(string name, string image, string repository, DiskImageFormat format, CancellationToken cancellationToken)
    {
        var extension = format == DiskImageFormat.Raw ? "raw" : "qcow2";
        var output = Path.Combine(work, "restored." + extension);
        // -t writeback: qemu-img convert's default cache mode for the target is unsafe (no fdatasync at the end);
        // Drydock's restore makes the image durable before it appears, so the peer is asked to as well.
        string[] peerCommand = ["qemu-img", "convert", "-t", "writeback", "-f", "raw", "-O", extension, image, output];

        // Diagnostic: qemu-img with O_DIRECT on the target (-t none), as Drydock writes its data.
        string[] directCommand = ["qemu-img", "convert", "-t", "none", "-f", "raw", "-O", extension, image, output];
        var peer = new List<Sample>();
        var direct = new List<Sample>();
        var ours = new List<Sample>();

        // Warm-up, and a check that the restored image reads back as the original.
        File.Delete(output);
        await TimeAsync(peerCommand, cancellationToken);
        File.Delete(output);
        await RestoreOnceAsync(repository, output, format, cancellationToken);
        await ShellAsync($"qemu-img compare -q -f raw -F {extension} '{image}' '{output}'", cancellationToken);
        for (var run = 0; run < runs; run++)
        {
            File.Delete(output);
            await SyncAsync(cancellationToken);
            peer.Add(await TimeAsync(peerCommand, cancellationToken));
            File.Delete(output);
            await SyncAsync(cancellationToken);
            direct.Add(await TimeAsync(directCommand, cancellationToken));
            File.Delete(output);
            await SyncAsync(cancellationToken);
            ours.Add(await RestoreOnceAsync(repository, output, format, cancellationToken));
            await log.WriteLineAsync(Invariant($"restore {name} to {extension} run {run + 1}/{runs}: qemu-img {peer[^1].Seconds:0.000} s, qemu-img -t none {direct[^1].Seconds:0.000} s, drydock {ours[^1].Seconds:0.000} s (CPU {ours[^1].CpuSeconds:0.00})"));
        }

        File.Delete(output);
        return new Row($"{name} → {extension}", $"`{string.Join(' ', peerCommand).Replace(work, "$W", StringComparison.Ordinal)}`", Median(peer), Median(ours), 0.8, "") { Direct = Median(direct) };
    }

    // Untimed, before every timed run: no run pays for the writeback of an earlier one (qemu-img never fsyncs, so its
    // dirty pages would otherwise be flushed during whatever runs next).
    private static Task SyncAsync(CancellationToken cancellationToken) => ShellAsync("sync", cancellationToken);

    private static async Task<Sample> RestoreOnceAsync(string path, string output, DiskImageFormat format, CancellationToken cancellationToken)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        using var repository = await BackupRepository.OpenAsync(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = path }), Passphrase, cancellationToken: cancellationToken);
        var point = await repository.OpenLatestAsync("default", Domain, cancellationToken: cancellationToken)
            ?? throw new InvalidOperationException("no point in the benchmark repository");
        var disk = await point.OpenDiskAsync("vda", cancellationToken);
        await new RestorePipeline().ToFileAsync(disk, output, format, cancellationToken: cancellationToken);
        return new Sample(clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
    }

    private string Report(List<Row> backups, List<Row> restores, string loadBefore, string loadAfter)
    {
        var text = new StringBuilder();
        text.Append(Invariant($"Image size {size / BenchImages.MiB} MiB in page cache, served read-only by `qemu-nbd -r -f raw -t -e 16` over a Unix socket; "));
        text.Append(Invariant($"median of {runs} alternating runs per tool after one warm-up each; {Environment.ProcessorCount} cores shared with other engineers; load average {loadBefore} at the start, {loadAfter} at the end. "));
        text.Append("Drydock runs in the benchmark process (Release, after its warm-up, as a silo runs it); the peers are child processes under GNU time. ");
        text.Append("Backup: `BackupPipeline.RunAsync` (default options: 4 connections, 16 reads in flight) of a full disk into a new local repository under `$W` = the work directory on the local disk ");
        text.Append("(default settings: 2 MiB chunks, zstd level 1, AES-256-GCM, fsync on), begin point → commit. Diagnostic columns: the same backup into an in-memory blob store (the pipeline without storage), ");
        text.Append("and `dd` writing as many bytes as Drydock stored with O_DIRECT and one fdatasync (the disk's floor for storing them). ");
        text.Append("Format CPU: the CPU-seconds of the format's work alone on the same bytes (the image read from page cache through the repository writer into a store that drops chunks: zero check, HMAC-SHA-256 id, zstd, AES-256-GCM; no NBD, no storage). ");
        text.Append(Invariant($"Bound = nbdcopy s ÷ max(storage floor s, format CPU s ÷ {Environment.ProcessorCount} cores): the ratio no pipeline could beat on this machine with this format, even with free NBD reads and perfect overlap of CPU and disk. An untimed `sync` runs before every timed run, so no run pays for an earlier one's writeback. "));
        text.Append("Restore: open the repository and the point, `RestorePipeline.ToFileAsync` to a new image in `$W` (fsync'd, sparse); the peer converts the original image with `-t writeback`, ");
        text.Append("which ends with an fdatasync of the target (checked with strace; qemu-img's default target mode, `unsafe`, never syncs), so both images are durable when the tool returns. Ratio = peer time ÷ Drydock time (throughput ratio; > 1: Drydock faster).\n\n");
        text.Append("| backup: image | peer command | nbdcopy s | Drydock s | ratio | target | met | Drydock CPU s | nbdcopy CPU s | in-memory store s | ratio, in-memory | storage floor s | format CPU s | bound | notes |\n");
        text.Append("|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        foreach (var row in backups)
        {
            text.Append(Invariant($"| {row.Name} | {row.PeerCommand} | {row.Peer.Seconds:0.000} | {row.Ours.Seconds:0.000} | {row.Ratio:0.00} | ≥ {row.Target:0.0} | {(row.Met ? "yes" : "**no**")} | {row.Ours.CpuSeconds:0.00} | {row.Peer.CpuSeconds:0.00} | {row.Memory!.Value.Seconds:0.000} | {row.Peer.Seconds / row.Memory!.Value.Seconds:0.00} | {row.Floor!.Value.Seconds:0.000} | {row.Format!.Value.CpuSeconds:0.00} | {row.Bound:0.00} | {row.Note} |\n"));
        }

        text.Append(Invariant($"\nStorage floor command: `{backups[0].FloorCommand}` (count = the stored bytes in 2 MiB blocks).\n"));
        text.Append("\nDiagnostic restore column: the same conversion with `-t none` (O_DIRECT on the target, flushed at the end), the way Drydock writes its data.\n");
        text.Append("\n| restore: image → format | peer command | qemu-img s | Drydock s | ratio | target | met | Drydock CPU s | qemu-img CPU s | qemu-img `-t none` s | ratio vs `-t none` |\n");
        text.Append("|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|\n");
        foreach (var row in restores)
        {
            text.Append(Invariant($"| {row.Name} | {row.PeerCommand} | {row.Peer.Seconds:0.000} | {row.Ours.Seconds:0.000} | {row.Ratio:0.00} | ≥ {row.Target:0.0} | {(row.Met ? "yes" : "**no**")} | {row.Ours.CpuSeconds:0.00} | {row.Peer.CpuSeconds:0.00} | {row.Direct!.Value.Seconds:0.000} | {row.Direct!.Value.Seconds / row.Ours.Seconds:0.00} |\n"));
        }

        return text.ToString();
    }

    private static async Task<string> ShellAsync(string command, CancellationToken cancellationToken)
    {
        var result = await ProcessRunner.RunAsync("bash", ["-c", "set -o pipefail; " + command], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(15) }, cancellationToken);
        return result.StandardOutput;
    }

    // GNU time: elapsed, user and system CPU seconds of the peer (and its children).
    internal static async Task<Sample> TimeAsync(string[] command, CancellationToken cancellationToken)
    {
        var result = await ProcessRunner.RunAsync("/usr/bin/time", ["-f", "%e %U %S", .. command], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(15) }, cancellationToken);
        var last = result.StandardError.Trim().Split('\n')[^1].Split(' ');
        return new Sample(
            double.Parse(last[0], CultureInfo.InvariantCulture),
            double.Parse(last[1], CultureInfo.InvariantCulture) + double.Parse(last[2], CultureInfo.InvariantCulture));
    }

    internal static string Load() => File.ReadAllText("/proc/loadavg").Split(' ')[0];

    internal static Sample Median(List<Sample> samples) => new(Median([.. samples.Select(s => s.Seconds)]), Median([.. samples.Select(s => s.CpuSeconds)]));

    internal static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>Wall and CPU seconds (medians are taken per column).</summary>
    internal readonly record struct Sample(double Seconds, double CpuSeconds);

    private readonly record struct BackupSample(Sample Sample, DiskBackupResult Result, long StoredBytes);

    private sealed record Row(string Name, string PeerCommand, Sample Peer, Sample Ours, double Target, string Note)
    {
        public Sample? Memory { get; init; }

        public Sample? Floor { get; init; }

        public Sample? Direct { get; init; }

        public Sample? Format { get; init; }

        // The best ratio this machine allows whatever the pipeline does: the stored bytes cannot reach the disk faster than
        // the storage floor, and the format's CPU cannot finish faster than spread evenly over every core.
        public double Bound => Peer.Seconds / Math.Max(Floor!.Value.Seconds, Format!.Value.CpuSeconds / Environment.ProcessorCount);

        public string FloorCommand { get; init; } = "";

        public double Ratio => Peer.Seconds / Ours.Seconds;

        public bool Met => Ratio >= Target;
    }
}
