using System.CommandLine;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Security.Cryptography;
using Drydock.Nbd.Client;
using Drydock.Nbd.Copy;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;

namespace Drydock.SiloHost.Cli.Nbd;

/// <summary>
/// <c>drydock nbd demo</c>: the NBD data plane end to end, with no external service. Drydock's server serves a
/// simulated guest disk (a sparse file) that a deterministic "guest" writes to; a checkpoint bitmap records
/// the writes after the first phase; Drydock's client then does what a backup does: negotiates the
/// allocation and changed-block contexts, maps them, copies the whole disk sparsely, reads only the changed
/// blocks, and verifies every byte. It shows the data plane alone; <c>drydock demo</c> runs the whole backup job.
/// </summary>
internal static class NbdDemoCommand
{
    private const long MiB = 1024 * 1024;
    private const string Checkpoint = "drydock-demo-cp1";

    public static Command Build() => DemoScaffold.Create(
        "demo",
        "Run the NBD data plane alone end to end on a simulated disk and verify the result.",
        512,
        "Size of the simulated disk in MiB.",
        "Keep the temporary directory (disk, copy) for inspection.",
        RunAsync);

    private static async Task<int> RunAsync(string directory, long size, int seed, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var started = TimeProvider.System.GetTimestamp();
        await using var backend = NbdFileBackend.Create(Path.Combine(directory, "vm1-vda.img"), (ulong)size);
        await using var server = new NbdServer();
        var disk = server.AddExport(new NbdExport("vm1-vda", backend, description: "simulated guest disk vm1/vda"));
        var socket = server.ListenUnix(Path.Combine(directory, "nbd.sock"));
        var uri = server.GetUnixUri("vm1-vda");
        await Say(output, $"serving a {Sizes.Human((ulong)size)} simulated disk at {uri}");

        // Phase 1: the guest fills 10 % of the disk in 1 MiB runs, then zeroes one run.
        var guest = new Random(seed);
        var fullRuns = PickRuns(guest, size, MiB, fraction: 0.10);
        foreach (var run in fullRuns)
        {
            await disk.WriteAsync((ulong)run, GuestData(guest, (int)MiB), cancellationToken: cancellationToken);
        }

        await disk.WriteZeroesAsync((ulong)fullRuns[0], (ulong)MiB, noHole: true, cancellationToken: cancellationToken);

        // A checkpoint: from here on, the bitmap records what changes.
        var bitmap = disk.CreateBitmap(Checkpoint);

        // Phase 2: 1 % more, as scattered 64 KiB writes, and one trim.
        var changed = PickRuns(guest, size, 64 * 1024, fraction: 0.01);
        foreach (var run in changed)
        {
            await disk.WriteAsync((ulong)run, GuestData(guest, 64 * 1024), cancellationToken: cancellationToken);
        }

        await disk.TrimAsync((ulong)fullRuns[^1], (ulong)MiB, cancellationToken: cancellationToken);
        await Say(output, $"guest wrote {fullRuns.Count} MiB, took checkpoint {Checkpoint}, then changed {changed.Count} x 64 KiB and trimmed 1 MiB");

        // What a backup does, with Drydock's client.
        var description = await NbdClient.DescribeAsync(uri, cancellationToken: cancellationToken);
        await Say(output, $"info: {description.Export.Size} bytes, contexts {string.Join(", ", description.AvailableContexts)}, multi-conn {description.Export.CanMultiConn}");

        var options = new NbdClientOptions { Connections = 4 };
        options.MetaContexts.Add(NbdContexts.BaseAllocation);
        options.MetaContexts.Add(bitmap.ContextName);
        await using var client = await NbdClient.ConnectAsync(uri, options, cancellationToken);
        var maps = await client.MapAsync(cancellationToken: cancellationToken);
        var allocation = maps[NbdContexts.BaseAllocation];
        var dirty = maps[bitmap.ContextName].Where(e => e.IsDirty).ToList();
        var dataBytes = allocation.Where(e => !e.IsZero).Sum(e => (long)e.Length);
        var dirtyBytes = dirty.Sum(e => (long)e.Length);
        await Say(output, $"map base:allocation: {allocation.Count} extents, {Sizes.Human((ulong)dataBytes)} to read, the rest holes or zeroes");
        await Say(output, $"map {bitmap.ContextName}: {dirty.Count} dirty extents, {Sizes.Human((ulong)dirtyBytes)} changed since the checkpoint");
        var expectedDirty = (long)bitmap.DirtyBytes;
        Check(dirtyBytes == expectedDirty, $"the dirty map covers {dirtyBytes} bytes, the bitmap recorded {expectedDirty}");

        // A full copy, sparse.
        var copy = Path.Combine(directory, "vm1-vda.copy.raw");
        var copier = new NbdCopier(client);
        NbdCopyResult result;
        await using (var progress = new TerminalProgress(error, "copy", client.Export.Size, () => copier.BytesDone, TerminalProgress.IsTerminal(error)))
        await using (var file = new FileCopyDestination(copy))
        {
            result = await copier.CopyAsync(file, cancellationToken);
        }

        await Say(output, $"copy: read {Sizes.Human(result.BytesRead)}, skipped {Sizes.Human(result.BytesSkipped)} of holes and zeroes, wrote {Sizes.Human(result.BytesWritten)}");

        // Verify the copy against the disk byte for byte (hashes of both files).
        var original = await HashAsync(backendPath: Path.Combine(directory, "vm1-vda.img"), cancellationToken);
        var copied = await HashAsync(copy, cancellationToken);
        Check(original.AsSpan().SequenceEqual(copied), "the copy differs from the disk");
        await Say(output, $"verify: copy equals disk (SHA-256 {Convert.ToHexStringLower(original)[..16]}…)");

        // An incremental read: only the changed blocks, each compared with the disk.
        var buffer = new byte[4 * MiB];
        var expected = new byte[4 * MiB];
        long incremental = 0;
        foreach (var extent in dirty)
        {
            for (var at = extent.Offset; at < extent.End; at += (ulong)buffer.Length)
            {
                var length = (int)Math.Min((ulong)buffer.Length, extent.End - at);
                await client.ReadAsync(at, buffer.AsMemory(0, length), cancellationToken);
                await disk.ReadAsync(at, expected.AsMemory(0, length), cancellationToken);
                Check(buffer.AsSpan(0, length).SequenceEqual(expected.AsSpan(0, length)), $"changed block at {at} read back wrong");
                incremental += length;
            }
        }

        await Say(output, $"incremental: read {Sizes.Human((ulong)incremental)} of changed blocks ({100.0 * incremental / size:0.00} % of the disk), all equal to the disk");
        await client.DisconnectAsync(cancellationToken);
        await server.StopAsync(cancellationToken);
        await Say(output, string.Create(CultureInfo.InvariantCulture, $"OK in {TimeProvider.System.GetElapsedTime(started).TotalSeconds:0.0} s ({socket})"));
        return ExitCodes.Success;
    }

    [SuppressMessage("Security", "CA5394:Do not use insecure randomness", Justification = "A seeded, reproducible simulated guest; nothing secret.")]
    private static List<long> PickRuns(Random random, long size, long run, double fraction)
    {
        var slots = size / run;
        var count = Math.Max(1, (int)(slots * fraction));
        return [.. Enumerable.Range(0, (int)slots).OrderBy(_ => random.Next()).Take(count).Order().Select(slot => slot * run)];
    }

    [SuppressMessage("Security", "CA5394:Do not use insecure randomness", Justification = "A seeded, reproducible simulated guest; nothing secret.")]
    private static byte[] GuestData(Random random, int length)
    {
        var data = new byte[length];
        random.NextBytes(data);
        return data;
    }

    private static async Task<byte[]> HashAsync(string backendPath, CancellationToken cancellationToken)
    {
        await using var file = File.OpenRead(backendPath);
        return await SHA256.HashDataAsync(file, cancellationToken);
    }

    private static void Check(bool condition, string failure)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"demo verification failed: {failure}");
        }
    }

    private static Task Say(TextWriter output, string line) => output.WriteLineAsync(line);
}
