using System.Diagnostics;
using System.Globalization;
using System.Text;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.TestKit;
using Drydock.Transfer.Backup;

namespace Drydock.Benchmarks.Transfer;

/// <summary>
/// Issue 6, row 3 (docs/BENCHMARKS.md "Backup and restore (issue 6)"): extent planning of an incremental on a 1 TiB
/// virtual disk with N scattered dirty extents. Drydock: connect with <c>base:allocation</c> and the dirty bitmap,
/// <see cref="NbdClient.MapAsync"/> of both (the walk <see cref="BackupPipeline"/> does) and <see cref="ReadPlanner"/>;
/// peers: <c>nbdinfo --map=qemu:dirty-bitmap:NAME URI</c> and <c>nbdinfo --map URI</c> (base:allocation) of the same
/// read-only qemu-nbd export. The image is built once per work directory: a sparse 1 TiB qcow2 with a persistent
/// bitmap, dirtied by N 4 KiB writes at distinct, non-adjacent 64 KiB granules through a writable
/// qemu-storage-daemon export, pipelined with Drydock's NbdClient.
/// </summary>
internal sealed class ExtentPlanningBenchmark(int extents, int runs, string work, TextWriter log)
{
    private const long Size = 1L << 40;
    private const int Granule = 64 * 1024;
    private const int WriteLength = 4096;
    private const int ChunkSize = 2 * 1024 * 1024;
    private const string Bitmap = "bench-dirty";

    private static string DirtyContext => NbdContexts.DirtyBitmapPrefix + Bitmap;

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(work);
        var image = Path.Combine(work, "disk-1t.qcow2");
        var ready = Path.Combine(work, Invariant($"disk-1t.{extents}.ready"));
        var loadBefore = BackupRestoreBenchmark.Load();
        if (!File.Exists(ready))
        {
            await BuildAsync(image, cancellationToken);
            await File.WriteAllTextAsync(ready, "built\n", cancellationToken);
        }

        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, Format = ImageFormat.Qcow2, ReadOnly = true, Bitmaps = [Bitmap] }, cancellationToken);
        string[] peerDirty = ["nbdinfo", "--map=" + DirtyContext, server.Uri];
        string[] peerAllocation = ["nbdinfo", "--map", server.Uri];

        // Warm-up, and the sizes of what each side sees.
        var dirtyLines = await LinesAsync(peerDirty, cancellationToken);
        var allocationLines = await LinesAsync(peerAllocation, cancellationToken);
        var first = await PlanOnceAsync(server.Uri, cancellationToken);
        await log.WriteLineAsync(Invariant($"nbdinfo lines: dirty map {dirtyLines}, base:allocation {allocationLines}; drydock: {first.DirtyExtents} dirty extents, {first.AllocationExtents} allocation extents, {first.Reads} chunk reads in {first.Runs} runs"));

        var dirtyFirstSeconds = new List<double>();
        var dirtyTimes = new List<double>();
        var allocationTimes = new List<double>();
        var ours = new List<Sample>();
        for (var run = 0; run < runs; run++)
        {
            dirtyTimes.Add(await TimeQuietAsync(peerDirty, cancellationToken));
            allocationTimes.Add(await TimeQuietAsync(peerAllocation, cancellationToken));
            ours.Add(await PlanOnceAsync(server.Uri, cancellationToken));
            dirtyFirstSeconds.Add(await DirtyFirstOnceAsync(server.Uri, first.Reads, cancellationToken));
            await log.WriteLineAsync(Invariant($"run {run + 1}/{runs}: nbdinfo dirty {dirtyTimes[^1]:0.000} s, nbdinfo allocation {allocationTimes[^1]:0.000} s, drydock {ours[^1].Seconds:0.000} s (walk {ours[^1].WalkSeconds:0.000}, plan {ours[^1].PlanSeconds:0.000})"));
        }

        var dirty = BackupRestoreBenchmark.Median(dirtyTimes);
        var allocation = BackupRestoreBenchmark.Median(allocationTimes);
        var total = BackupRestoreBenchmark.Median([.. ours.Select(s => s.Seconds)]);
        var walk = BackupRestoreBenchmark.Median([.. ours.Select(s => s.WalkSeconds)]);
        var plan = BackupRestoreBenchmark.Median([.. ours.Select(s => s.PlanSeconds)]);
        var peers = BackupRestoreBenchmark.Median([.. dirtyTimes.Zip(allocationTimes, (d, a) => d + a)]);
        var uri = server.Uri;

        var text = new StringBuilder();
        text.Append(Invariant($"A sparse 1 TiB qcow2 (64 KiB clusters) with a persistent bitmap (64 KiB granularity) dirtied by {extents:N0} writes of 4 KiB at distinct, non-adjacent granules "));
        text.Append(Invariant($"(written once through a qemu-storage-daemon export, kept in `{work}`), served read-only by `qemu-nbd -r -f qcow2 -B {Bitmap} -t -e 16` over a Unix socket. "));
        text.Append(Invariant($"The peers print {dirtyLines:N0} (dirty map) and {allocationLines:N0} (base:allocation) extent lines, output to /dev/null; Drydock sees {first.DirtyExtents:N0} dirty and {first.AllocationExtents:N0} allocation extents and plans {first.Reads:N0} chunk reads (2 MiB chunks) in {first.Runs:N0} runs. "));
        text.Append(Invariant($"Median of {runs} alternating runs after a warm-up; {Environment.ProcessorCount} shared cores, load average {loadBefore} at the start, {BackupRestoreBenchmark.Load()} at the end. "));
        text.Append("Drydock runs in the benchmark process: connect (both contexts) → `MapAsync` of both → `ReadPlanner.Plan` → disconnect, what an incremental's planning does.\n\n");
        text.Append("| what | command | median s |\n|---|---|---:|\n");
        text.Append(Invariant($"| nbdinfo, dirty bitmap | `{string.Join(' ', peerDirty)}` | {dirty:0.000} |\n"));
        text.Append(Invariant($"| nbdinfo, base:allocation | `{string.Join(' ', peerAllocation)}` | {allocation:0.000} |\n"));
        text.Append(Invariant($"| nbdinfo, both (sum per run) | | {peers:0.000} |\n"));
        text.Append(Invariant($"| Drydock walk of both contexts | in process, `{uri}` | {walk:0.000} |\n"));
        text.Append(Invariant($"| Drydock ReadPlanner | in process | {plan:0.000} |\n"));
        text.Append(Invariant($"| **Drydock total** (connect + walk + plan) | | **{total:0.000}** |\n"));
        text.Append(Invariant($"| diagnostic, not what BackupPipeline does: dirty map first, then base:allocation of the touched chunks only (64 requests in flight) + plan | in process | {BackupRestoreBenchmark.Median(dirtyFirstSeconds):0.000} |\n\n"));
        var ratio = total / peers;
        text.Append(Invariant($"Ratio Drydock ÷ nbdinfo (both maps): **{ratio:0.00}** (target ≤ 2: {(ratio <= 2 ? "met" : "**not met**")}); Drydock ÷ nbdinfo dirty map alone: {total / dirty:0.00}.\n"));
        return text.ToString();
    }

    private static async Task<Sample> PlanOnceAsync(string uri, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var options = new NbdClientOptions();
        options.MetaContexts.Add(NbdContexts.BaseAllocation);
        options.MetaContexts.Add(DirtyContext);
        await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(uri), options, cancellationToken);
        var maps = await client.MapAsync([NbdContexts.BaseAllocation, DirtyContext], cancellationToken: cancellationToken);
        var walked = clock.Elapsed.TotalSeconds;
        var plan = ReadPlanner.Plan(Size, ChunkSize, maps[NbdContexts.BaseAllocation], maps[DirtyContext], []);
        var planned = clock.Elapsed.TotalSeconds;
        await client.DisconnectAsync(cancellationToken);
        var total = clock.Elapsed.TotalSeconds;
        return new Sample(total, walked, planned - walked, maps[DirtyContext].Count(e => e.IsDirty), maps[NbdContexts.BaseAllocation].Count, plan.Reads.Count, plan.Runs);
    }

    // A dirty-first walk: the dirty map of the whole disk, then base:allocation only over the chunk runs it touches.
    private static async Task<double> DirtyFirstOnceAsync(string uri, int expectedReads, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var options = new NbdClientOptions { MaxRequestsInFlight = 64 };
        options.MetaContexts.Add(NbdContexts.BaseAllocation);
        options.MetaContexts.Add(DirtyContext);
        await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(uri), options, cancellationToken);
        var dirty = (await client.MapAsync([DirtyContext], cancellationToken: cancellationToken))[DirtyContext];
        var runs = new List<(long Start, long End)>();
        foreach (var extent in dirty.Where(e => e.IsDirty))
        {
            var start = (long)extent.Offset / ChunkSize * ChunkSize;
            var end = Math.Min(Size, ((long)extent.End + ChunkSize - 1) / ChunkSize * ChunkSize);
            if (runs.Count > 0 && runs[^1].End >= start)
            {
                runs[^1] = (runs[^1].Start, Math.Max(runs[^1].End, end));
            }
            else
            {
                runs.Add((start, end));
            }
        }

        var maps = new IReadOnlyList<NbdExtent>[runs.Count];
        foreach (var batch in Enumerable.Range(0, runs.Count).Chunk(64))
        {
            await Task.WhenAll(batch.Select(async i =>
                maps[i] = (await client.MapAsync([NbdContexts.BaseAllocation], (ulong)runs[i].Start, (ulong)(runs[i].End - runs[i].Start), cancellationToken))[NbdContexts.BaseAllocation]));
        }

        var plan = ReadPlanner.Plan(Size, ChunkSize, [.. maps.SelectMany(m => m)], dirty, []);
        await client.DisconnectAsync(cancellationToken);
        if (plan.Reads.Count != expectedReads)
        {
            throw new InvalidOperationException($"the dirty-first plan has {plan.Reads.Count} reads, the full walk {expectedReads}");
        }

        return clock.Elapsed.TotalSeconds;
    }

    private async Task BuildAsync(string image, CancellationToken cancellationToken)
    {
        await log.WriteLineAsync($"building {image}: 1 TiB qcow2, bitmap {Bitmap}, {extents} scattered 4 KiB writes");
        File.Delete(image);
        await QemuImage.CreateQcow2Async(image, Size, cancellationToken);
        await QemuImage.AddBitmapAsync(image, Bitmap, cancellationToken: cancellationToken);
        await using var daemon = await QemuStorageDaemon.StartAsync(cancellationToken: cancellationToken);
        await daemon.AddImageNodeAsync(image, "disk0", cancellationToken: cancellationToken);
        await daemon.StartNbdServerAsync(cancellationToken: cancellationToken);
        var uri = await daemon.AddNbdExportAsync("exp0", "disk0", "disk", writable: true, cancellationToken: cancellationToken);

        // Distinct granules at even indexes only, so no two dirty granules touch: exactly N dirty extents.
        var random = new Random(6);
        var granules = new HashSet<long>();
        while (granules.Count < extents)
        {
            granules.Add(random.NextInt64(Size / Granule / 2) * 2);
        }

        var clock = Stopwatch.StartNew();
        await using (var client = await NbdClient.ConnectAsync(NbdUri.Parse(uri), cancellationToken: cancellationToken))
        {
            var data = TestData.Create(0, WriteLength, seed: 6);
            foreach (var batch in granules.Order().Chunk(256))
            {
                await Task.WhenAll(batch.Select(g => client.WriteAsync((ulong)((g * Granule) + (random.Next(Granule / WriteLength) * WriteLength)), data, cancellationToken: cancellationToken)));
            }

            await client.FlushAsync(cancellationToken);
            await client.DisconnectAsync(cancellationToken);
        }

        await log.WriteLineAsync(Invariant($"{extents} writes in {clock.Elapsed.TotalSeconds:0.0} s"));
        await daemon.RemoveNbdExportAsync("exp0", cancellationToken);
        await daemon.RemoveImageNodeAsync("disk0", cancellationToken); // writes the bitmap back
    }

    private static async Task<long> LinesAsync(string[] command, CancellationToken cancellationToken)
    {
        var result = await ProcessRunner.RunAsync(command[0], command[1..], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(10) }, cancellationToken);
        return result.StandardOutput.Count(c => c == '\n');
    }

    private static async Task<double> TimeQuietAsync(string[] command, CancellationToken cancellationToken)
    {
        var quoted = string.Join(' ', command.Select(a => "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));
        var clock = Stopwatch.StartNew();
        await ProcessRunner.RunAsync("bash", ["-c", $"exec {quoted} > /dev/null"], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(10) }, cancellationToken);
        return clock.Elapsed.TotalSeconds;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private readonly record struct Sample(double Seconds, double WalkSeconds, double PlanSeconds, int DirtyExtents, int AllocationExtents, int Reads, long Runs);
}
