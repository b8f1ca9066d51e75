using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Repository.Read;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Restore;
using Drydock.Transfer.Tests.TestSupport;
using Xunit;
using static Drydock.Transfer.Tests.TestSupport.TransferHarness;

namespace Drydock.Transfer.Tests.Backup;

public sealed class BackupPipelineTests
{
    // 41 chunks: 40 whole and an 8 KiB tail.
    private const long DiskSize = (40L * ChunkSize) + 8192;

    private static async Task<byte[]> RepositoryRestoreAsync(DiskReader reader)
    {
        using var output = new MemoryStream();
        await reader.CopyToAsync(output, Ct);
        return output.ToArray();
    }

    [Fact]
    public async Task Full_backup_reads_only_data_chunks_and_the_point_restores_byte_exact()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();

        var (manifest, result) = await h.BackupAsync();

        // Data in chunks 0-2, 5, 9-10, 12 (allocated zeros), 20-21 and 40; everything else is a hole.
        Assert.Equal(10, result.ChunksRead);
        Assert.Equal(31, result.ChunksZero);
        Assert.Equal(0, result.ChunksInherited);
        Assert.Equal(6, result.Extents);
        // Partly-hole chunks read only their data: 5 (two pieces, 12 KiB), 9 and 10 (half each), 40 (4 KiB of 8 KiB).
        Assert.Equal((3 * ChunkSize) + 12288 + ChunkSize + ChunkSize + (2 * ChunkSize) + 4096, result.BytesRead);
        Assert.Equal(0, result.Reconnects);
        Assert.Equal(41, manifest.Disks[0].Stats.Chunks);
        Assert.Equal(await h.ContentAsync(), await RepositoryRestoreAsync(await h.OpenAsync(1)));
    }

    [Fact]
    public async Task Incremental_reads_only_dirty_chunks_and_trimmed_ranges_restore_as_zeros()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var bitmap = h.Disk.CreateBitmap("cp1");
        await h.BackupAsync();
        var random = new Random(7);
        var bytes = new byte[ChunkSize];
        random.NextBytes(bytes);
        await h.Disk.WriteAsync((1 * ChunkSize) + 4096, bytes.AsMemory(0, 4096), cancellationToken: Ct);
        await h.Disk.WriteAsync(2 * ChunkSize, bytes, cancellationToken: Ct);
        await h.Disk.WriteAsync(30 * ChunkSize, bytes.AsMemory(0, 10 * 1024), cancellationToken: Ct);
        await h.Disk.TrimAsync(20 * ChunkSize, ChunkSize, cancellationToken: Ct);                      // F19
        await h.Disk.WriteZeroesAsync((21 * ChunkSize) + (ChunkSize / 2), ChunkSize / 2, cancellationToken: Ct);

        var (_, result) = await h.BackupAsync(DiskBackupLevel.Incremental, parent: 1, changedBlocksContext: bitmap.ContextName);

        // Dirty: 1, 2, 20, 21, 30. Chunk 20 reads as zeros now: stored as zero, never inherited (old data must not return).
        Assert.Equal(4, result.ChunksRead);
        Assert.Equal(1, result.ChunksZero);
        Assert.Equal(41 - 5, result.ChunksInherited);
        Assert.True(result.BytesRead <= 4 * ChunkSize, $"read {result.BytesRead} bytes for 4 dirty chunks");
        var restored = await RepositoryRestoreAsync(await h.OpenAsync(2));
        Assert.Equal(await h.ContentAsync(), restored);
        Assert.True(restored.AsSpan(20 * ChunkSize, ChunkSize).IndexOfAnyExcept((byte)0) < 0);
        Assert.True((await RepositoryRestoreAsync(await h.OpenAsync(1))).AsSpan(20 * ChunkSize, ChunkSize).IndexOfAnyExcept((byte)0) >= 0);
    }

    [Fact]
    public async Task Partly_changed_chunks_are_patched_from_the_parent_reading_only_the_changed_granules()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var bitmap = h.Disk.CreateBitmap("cp1", granularity: 4096);
        await h.BackupAsync();
        var bytes = new byte[ChunkSize];
        new Random(11).NextBytes(bytes);
        await h.Disk.WriteAsync((1 * ChunkSize) + 8192, bytes.AsMemory(0, 100), cancellationToken: Ct);       // one granule
        await h.Disk.WriteAsync(2 * ChunkSize, bytes.AsMemory(0, 3 * 4096), cancellationToken: Ct);            // three granules
        await h.Disk.WriteZeroesAsync((2 * ChunkSize) + (8 * 4096), 2 * 4096, cancellationToken: Ct);        // zeroed: no read
        await h.Disk.WriteAsync(30 * ChunkSize, bytes.AsMemory(0, 40 * 1024), cancellationToken: Ct);         // 10 granules: over half, whole read

        var (_, result) = await h.BackupAsync(DiskBackupLevel.Incremental, parent: 1, changedBlocksContext: bitmap.ContextName);

        Assert.Equal(3, result.ChunksRead);
        Assert.Equal(2, result.ChunksPatched);
        Assert.Equal(4096 + (3 * 4096) + (40 * 1024), result.BytesRead); // chunk 30 was a hole: only its data is read
        var restored = await RepositoryRestoreAsync(await h.OpenAsync(2));
        Assert.Equal(await h.ContentAsync(), restored);
        Assert.True(restored.AsSpan((2 * ChunkSize) + (8 * 4096), 2 * 4096).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task A_damaged_parent_copy_makes_the_chunk_read_whole_and_the_point_is_still_exact()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var bitmap = h.Disk.CreateBitmap("cp1", granularity: 4096);
        await h.BackupAsync();
        h.Store.Tamper(ObjectNames.Chunk((await h.OpenAsync(1)).IdOf(1)), b => { b[^1] ^= 1; return b; }); // not yet quarantined
        await h.Disk.WriteAsync((1 * ChunkSize) + 8192, new byte[] { 7, 7, 7 }, cancellationToken: Ct);

        var (_, result) = await h.BackupAsync(DiskBackupLevel.Incremental, parent: 1, changedBlocksContext: bitmap.ContextName);

        Assert.Equal(1, result.ChunksRead);
        Assert.Equal(ChunkSize, result.BytesRead);
        Assert.Equal(await h.ContentAsync(), await RepositoryRestoreAsync(await h.OpenAsync(2)));
    }

    [Fact]
    public async Task Refresh_required_chunks_are_read_although_they_did_not_change()
    {
        // F32: verify found the parent's chunk 1 bad; the incremental must resubmit it or the commit is refused.
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var bitmap = h.Disk.CreateBitmap("cp1");
        await h.BackupAsync();
        h.Store.Tamper(ObjectNames.Chunk((await h.OpenAsync(1)).IdOf(1)), b => { b[^1] ^= 1; return b; });
        Assert.False((await h.Repository.VerifyAsync(new VerifyOptions(), Ct)).Ok);
        await h.Disk.WriteAsync(30 * ChunkSize, new byte[] { 1, 2, 3 }, cancellationToken: Ct);

        IReadOnlyList<long> refresh = [];
        var (_, result) = await h.BackupAsync(DiskBackupLevel.Incremental, 1, bitmap.ContextName, inspect: w => refresh = w.RefreshRequired);

        Assert.Equal([1L], refresh);
        Assert.Equal(2, result.ChunksRead); // chunk 30 (dirty) and chunk 1 (refresh)
        Assert.Equal(await h.ContentAsync(), await RepositoryRestoreAsync(await h.OpenAsync(2)));
    }

    [Fact]
    public async Task A_dirty_context_the_server_does_not_offer_fails_instead_of_meaning_nothing_changed()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        await h.BackupAsync();

        await using var session = await h.BeginAsync();
        var writer = await h.AddDiskAsync(session, DiskBackupLevel.Incremental, 1);
        var error = await Assert.ThrowsAsync<SourceReadException>(() =>
            new BackupPipeline(FastOptions()).RunAsync(h.Capture("qemu:dirty-bitmap:gone"), writer, cancellationToken: Ct));

        Assert.Contains("qemu:dirty-bitmap:gone", error.Message, StringComparison.Ordinal);
        Assert.Equal("vda", error.Disk);
    }

    [Fact]
    public async Task A_read_error_fails_naming_the_offset_and_nothing_is_committed()
    {
        // F26: EIO is never retried forever and never zero-filled.
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        const long bad = (20L * ChunkSize) + 8192;
        h.Plan.Add(NbdRequestFault.FailRange(bad, 4096));

        SourceReadException error;
        await using (var session = await h.BeginAsync())
        {
            var writer = await h.AddDiskAsync(session);
            error = await Assert.ThrowsAsync<SourceReadException>(() => new BackupPipeline(FastOptions()).RunAsync(h.Capture(), writer, cancellationToken: Ct));
        }

        Assert.Equal(bad, error.Offset);
        Assert.Equal("vda", error.Disk);
        Assert.Contains(bad.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
        Assert.Empty(await h.Repository.ListPointsAsync(cancellationToken: Ct));
    }

    [Fact]
    public async Task Dropped_connections_are_reopened_and_the_backup_completes_byte_exact()
    {
        // F23: EOF inside a READ payload, then a READ that is never answered (request timeout).
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.EofInPayload, NbdCommand.Read) with { Count = 1, RangeOffset = 9 * ChunkSize, RangeLength = ChunkSize });
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.NoReply, NbdCommand.Read) with { Count = 1, RangeOffset = 20 * ChunkSize, RangeLength = ChunkSize });

        var (_, result) = await h.BackupAsync(options: FastOptions(o => o.RequestTimeout = TimeSpan.FromSeconds(1)));

        Assert.True(result.Reconnects >= 1, $"reconnects: {result.Reconnects}");
        Assert.Equal(2, h.Plan.Fired);
        Assert.Equal(10, result.ChunksRead);
        var path = h.Directory.File("restored.raw");
        await new RestorePipeline().ToFileAsync(await h.OpenAsync(1), path, DiskImageFormat.Raw, cancellationToken: Ct);
        Assert.Equal(await h.ContentAsync(), await File.ReadAllBytesAsync(path, Ct));
    }

    [Fact]
    public async Task A_server_that_keeps_dropping_the_connection_fails_the_disk_after_the_reconnect_budget()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.EofInPayload, NbdCommand.Read) with { RangeOffset = 9 * ChunkSize, RangeLength = ChunkSize });

        await using var session = await h.BeginAsync();
        var writer = await h.AddDiskAsync(session);
        var error = await Assert.ThrowsAsync<SourceReadException>(() =>
            new BackupPipeline(FastOptions(o => o.ReconnectAttempts = 2)).RunAsync(h.Capture(), writer, cancellationToken: Ct));

        Assert.Contains("reconnect", error.Message, StringComparison.Ordinal);
        Assert.Equal(3, h.Plan.Fired); // the first try and two reconnects
    }

    [Fact]
    public async Task Progress_goes_from_planning_to_done_with_every_planned_byte_counted()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var reports = new List<TransferProgress>();
        var sink = new InlineProgress<TransferProgress>(p => { lock (reports) { reports.Add(p); } });

        await using var session = await h.BeginAsync();
        var writer = await h.AddDiskAsync(session);
        var result = await new BackupPipeline(FastOptions(o => o.ProgressInterval = TimeSpan.FromHours(1))).RunAsync(h.Capture(), writer, sink, Ct);

        // With a long interval only the phase changes are reported.
        Assert.Equal([TransferPhase.Planning, TransferPhase.Transferring, TransferPhase.Done], reports.Select(r => r.Phase));
        Assert.Equal(result.BytesRead, reports[^1].TotalBytes);
        Assert.Equal(result.BytesRead, reports[^1].DoneBytes);
        Assert.Equal(result.Extents, reports[^1].DoneExtents);
    }

    [Fact]
    public async Task Cancellation_stops_the_backup_promptly()
    {
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        h.Plan.Add(NbdRequestFault.DelayBy(TimeSpan.FromMilliseconds(200), NbdCommand.Read));
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var sink = new InlineProgress<TransferProgress>(p =>
        {
            if (p.DoneBytes > 0)
            {
                cancel.Cancel();
            }
        });

        await using var session = await h.BeginAsync();
        var writer = await h.AddDiskAsync(session);
        var started = System.Diagnostics.Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            new BackupPipeline(FastOptions(o => o.ProgressInterval = TimeSpan.Zero)).RunAsync(h.Capture(), writer, sink, cancel.Token));
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(5), $"took {started.Elapsed}");
    }
}
