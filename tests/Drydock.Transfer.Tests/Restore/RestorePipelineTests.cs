using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.TestKit;
using Drydock.Transfer.Restore;
using Drydock.Transfer.Tests.TestSupport;
using Xunit;
using static Drydock.Transfer.Tests.TestSupport.TransferHarness;

namespace Drydock.Transfer.Tests.Restore;

public sealed class RestorePipelineTests
{
    // 41 chunks: 40 whole and an 8 KiB tail (a multiple of 512, as qcow2 needs).
    private const long DiskSize = (40L * ChunkSize) + 8192;

    private static RestorePipeline Pipeline(Action<RestorePipelineOptions>? configure = null)
    {
        var options = new RestorePipelineOptions { Connections = 2, Parallelism = 4, RequestTimeout = TimeSpan.FromSeconds(10) };
        configure?.Invoke(options);
        return new RestorePipeline(options);
    }

    private static async Task<TransferHarness> BackedUpAsync()
    {
        var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        await h.BackupAsync();
        return h;
    }

    private static NbdExport AddTarget(TransferHarness h, long size = DiskSize, string name = "target") =>
        h.Server.AddExport(new NbdExport(name, new NbdMemoryBackend((ulong)size)));

    private static string[] FilesIn(string directory) =>
        [.. Directory.EnumerateFiles(directory).Select(Path.GetFileName).Where(n => n != "nbd.sock").Order(StringComparer.Ordinal)!];

    [Fact]
    public async Task A_full_backup_restores_to_a_raw_file_byte_exact_and_the_file_stays_sparse()
    {
        await using var h = await BackedUpAsync();
        var path = h.Directory.File("vda.raw");

        var result = await Pipeline().ToFileAsync(await h.OpenAsync(1), path, DiskImageFormat.Raw, cancellationToken: Ct);

        Assert.Equal(await h.ContentAsync(), await File.ReadAllBytesAsync(path, Ct));
        // Non-zero chunks: 0-2, 5, 9-10, 20-21, 40 (chunk 12 holds allocated zeros: stored and restored as a hole).
        Assert.Equal(9, result.ChunksWritten);
        Assert.Equal(32, result.ChunksSkipped);
        Assert.Equal(0, result.ChunksZeroed);
        Assert.Equal((8 * ChunkSize) + 8192, result.BytesWritten);
        var allocated = await AllocatedBytesAsync(path);
        Assert.True(allocated <= result.BytesWritten + (64 * 1024), $"{allocated} bytes allocated for {result.BytesWritten} written of {DiskSize}");
        Assert.Equal(["vda.raw"], FilesIn(h.Directory.Path));
    }

    [Fact]
    public void A_fresh_target_gets_only_the_segments_of_a_chunk_that_hold_data()
    {
        const int segment = 4096;
        var chunk = new byte[(5 * segment) + 100];
        chunk[10] = 1;                       // segment 0
        chunk[(2 * segment) + 5] = 2;        // segment 2
        chunk[(3 * segment) + 4095] = 3;     // segment 3 (merged with 2)
        chunk[(5 * segment) + 99] = 4;       // the short tail

        var runs = RestorePipeline.DataRuns(chunk, segment);

        Assert.Equal([(0, segment), (2 * segment, 2 * segment), (5 * segment, 100)], runs);
        Assert.Empty(RestorePipeline.DataRuns(new byte[3 * segment], segment));
        Assert.Equal([(0, 3 * segment)], RestorePipeline.DataRuns(Enumerable.Repeat((byte)7, 3 * segment).ToArray(), segment));
    }

    [Fact]
    public async Task A_raw_restore_whose_last_chunk_is_not_4_KiB_aligned_is_byte_exact()
    {
        // Whole chunks go out with O_DIRECT, a 1.5 KiB tail cannot: both halves must land, and the size stay exact.
        const long size = (6L * ChunkSize) + 1536;
        await using var h = await StartAsync(size);
        var content = new byte[size];
        new Random(11).NextBytes(content);
        await h.Disk.WriteAsync(0, content, cancellationToken: Ct);
        await h.BackupAsync();
        var path = h.Directory.File("tail.raw");

        var result = await Pipeline().ToFileAsync(await h.OpenAsync(1), path, DiskImageFormat.Raw, cancellationToken: Ct);

        Assert.Equal(7, result.ChunksWritten);
        Assert.Equal(content, await File.ReadAllBytesAsync(path, Ct));
    }

    [Fact]
    public async Task A_full_backup_restores_to_a_qcow2_image_that_qemu_img_finds_identical()
    {
        await using var h = await BackedUpAsync();
        var expected = h.Directory.File("expected.raw");
        await File.WriteAllBytesAsync(expected, await h.ContentAsync(), Ct);
        var path = h.Directory.File("vda.qcow2");

        var result = await Pipeline().ToFileAsync(await h.OpenAsync(1), path, DiskImageFormat.Qcow2, cancellationToken: Ct);

        Assert.Equal(9, result.ChunksWritten);
        var info = await NbdTools.ImageInfoAsync(path, cancellationToken: Ct);
        Assert.Equal(("qcow2", DiskSize), (info.Format, info.VirtualSize));
        var (exitCode, report) = await NbdTools.CheckImageAsync(path, Ct);
        Assert.True(exitCode == 0, report); // no corruption, no leaked clusters
        Assert.True(await NbdTools.CompareAsync(expected, "raw", path, "qcow2", cancellationToken: Ct));
        Assert.Equal(["expected.raw", "vda.qcow2"], FilesIn(h.Directory.Path));

        // Sparse: only the 64 KiB clusters holding data are allocated (chunk 12's allocated zeros are not).
        var mapped = (await NbdTools.ImageMapAsync(path, "qcow2", Ct)).Where(e => e.Data).Sum(e => e.Length);
        Assert.Equal(result.BytesWritten, mapped);
    }

    [Theory]
    [InlineData(9, 64L * 1024 * 1024)]        // 512-byte clusters: a multi-cluster L1 table, many refcount blocks
    [InlineData(16, (5L << 30) + 4096)]       // 64 KiB clusters, 5 GiB + 4 KiB: L2 tables far apart, a short last cluster
    public async Task The_qcow2_writer_maps_runs_written_in_any_order_and_qemu_finds_the_image_clean(int clusterBits, long size)
    {
        using var directory = TestDirectory.Create("qcow2");
        var path = directory.File("image.qcow2");
        var cluster = 1 << clusterBits;
        var runs = new List<(long Offset, byte[] Data)>
        {
            (size - 4096, Filled(4096, 1)),                          // the end of the disk, a partial cluster when 64 KiB
            (0, Filled(3 * cluster, 2)),
            (size / 2 / cluster * cluster, Filled(cluster, 3)),
            (size / 3 / cluster * cluster, Filled(2 * cluster, 4)),
        };
        if (clusterBits == 9)
        {
            // Enough data clusters that the refcount blocks (256 clusters each) and their table span several clusters.
            for (var i = 0; i < 400; i++)
            {
                runs.Add((((long)i * 300 * cluster) + (8L * cluster), Filled(cluster, (byte)(10 + (i % 200)))));
            }
        }

        await using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 0))
        {
            var writer = new Qcow2ImageWriter(file.SafeFileHandle, null, path, size, clusterBits);
            await Parallel.ForEachAsync(runs, Ct, async (run, ct) => await writer.WriteAsync(run.Offset, run.Data, ct));
            writer.Complete();
        }

        var (exitCode, report) = await NbdTools.CheckImageAsync(path, Ct);
        Assert.True(exitCode == 0, report);
        Assert.Equal(size, (await NbdTools.ImageInfoAsync(path, "qcow2", cancellationToken: Ct)).VirtualSize);
        foreach (var (offset, data) in runs)
        {
            Assert.True(await NbdTools.VerifyPatternAsync(path, "qcow2", offset, data.Length, data[0], Ct), $"pattern {data[0]} at {offset}");
        }

        // Between the runs the image reads as zeroes and allocates nothing.
        var mapped = (await NbdTools.ImageMapAsync(path, "qcow2", Ct)).Where(e => e.Data).Sum(e => e.Length);
        Assert.Equal(runs.Sum(r => (long)r.Data.Length), mapped);

        // QEMU can go on using it as a disk: a write into an unallocated cluster (new L2 entry, refcounts grown) and
        // over a restored one leave the image clean and both readable.
        var fresh = (size / 4 / cluster * cluster) + cluster;
        await NbdTools.QemuIoAsync(path, "qcow2", [Invariant($"write -P 0x55 {fresh} {cluster}"), Invariant($"write -P 0x66 0 {cluster}")], cancellationToken: Ct);
        (exitCode, report) = await NbdTools.CheckImageAsync(path, Ct);
        Assert.True(exitCode == 0, report);
        Assert.True(await NbdTools.VerifyPatternAsync(path, "qcow2", fresh, cluster, 0x55, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(path, "qcow2", 0, cluster, 0x66, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(path, "qcow2", cluster, 2 * cluster, 2, Ct));
    }

    private static string Invariant(FormattableString text) => text.ToString(System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task The_qcow2_writer_refuses_a_run_that_is_not_whole_clusters_or_a_cluster_written_twice()
    {
        using var directory = TestDirectory.Create("qcow2");
        var path = directory.File("image.qcow2");
        using var file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 0);
        var writer = new Qcow2ImageWriter(file.SafeFileHandle, null, path, 1 << 20);

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteAsync(4096, new byte[65536], Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteAsync(0, new byte[4096], Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteAsync(1 << 20, new byte[65536], Ct));
        await writer.WriteAsync(65536, new byte[65536], Ct);
        await Assert.ThrowsAsync<InvalidOperationException>(() => writer.WriteAsync(0, new byte[2 * 65536], Ct));
    }

    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    [Fact]
    public async Task An_incremental_restored_over_the_old_disk_writes_zeros_where_the_guest_trimmed()
    {
        // F19 end to end: the target holds the full's content; after Overwrite it must equal the disk, trimmed range included.
        await using var h = await StartAsync(DiskSize);
        await h.WriteMixedContentAsync();
        var bitmap = h.Disk.CreateBitmap("cp1");
        await h.BackupAsync();
        var target = AddTarget(h);
        await Pipeline().ToNbdAsync(await h.OpenAsync(1), h.Server.GetUnixUri("target"), RestoreWriteMode.FreshTarget, cancellationToken: Ct);
        await h.Disk.TrimAsync(20 * ChunkSize, 2 * ChunkSize, cancellationToken: Ct);
        await h.Disk.WriteAsync((3 * ChunkSize) + 100, new byte[] { 9, 9, 9 }, cancellationToken: Ct);
        await h.BackupAsync(DiskBackupLevel.Incremental, 1, bitmap.ContextName);

        var result = await Pipeline().ToNbdAsync(await h.OpenAsync(2), h.Server.GetUnixUri("target"), RestoreWriteMode.Overwrite, cancellationToken: Ct);

        Assert.Equal(await h.ContentAsync(), await ContentAsync(target));
        Assert.Equal(8, result.ChunksWritten);  // 0-3, 5, 9-10, 40
        Assert.Equal(33, result.ChunksZeroed);
    }

    [Fact]
    public async Task A_dropped_target_connection_is_reopened_and_the_restore_completes_byte_exact()
    {
        // F23 on the write side: a write that is never answered (request timeout) and a write whose connection is reset;
        // the chunks in flight are written again on a new connection.
        await using var h = await BackedUpAsync();
        var target = AddTarget(h);
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.NoReply, NbdCommand.Write) with { Count = 1, RangeOffset = 9 * ChunkSize, RangeLength = ChunkSize });
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.NoReply, NbdCommand.Write) with { Count = 1, RangeOffset = 20 * ChunkSize, RangeLength = ChunkSize });

        var result = await Pipeline(o => o.RequestTimeout = TimeSpan.FromSeconds(1)).ToNbdAsync(
            await h.OpenAsync(1), h.Server.GetUnixUri("target"), RestoreWriteMode.FreshTarget, cancellationToken: Ct);

        Assert.Equal(2, h.Plan.Fired);
        Assert.True(result.Reconnects >= 1, $"reconnects: {result.Reconnects}");
        Assert.Equal(await h.ContentAsync(), await ContentAsync(target));
    }

    [Fact]
    public async Task A_target_that_keeps_dropping_the_connection_fails_naming_the_offset_after_the_reconnect_budget()
    {
        await using var h = await BackedUpAsync();
        AddTarget(h);
        h.Plan.Add(NbdRequestFault.Reply(NbdReplyFault.NoReply, NbdCommand.Write) with { RangeOffset = 9 * ChunkSize, RangeLength = ChunkSize });

        var source = await h.OpenAsync(1);
        var error = await Assert.ThrowsAsync<TargetWriteException>(() => Pipeline(o =>
        {
            o.RequestTimeout = TimeSpan.FromMilliseconds(500);
            o.ReconnectAttempts = 2;
        }).ToNbdAsync(source, h.Server.GetUnixUri("target"), RestoreWriteMode.FreshTarget, cancellationToken: Ct));

        Assert.Equal("vda", error.Disk);
        Assert.Equal(9 * ChunkSize, error.Offset);
        Assert.Contains("2 reconnect(s) did not help", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_target_of_another_size_is_refused_naming_both_sizes()
    {
        await using var h = await BackedUpAsync();
        var target = AddTarget(h, DiskSize + ChunkSize);
        var reader = await h.OpenAsync(1);

        var error = await Assert.ThrowsAsync<TransferRequestException>(() =>
            Pipeline().ToNbdAsync(reader, h.Server.GetUnixUri("target"), RestoreWriteMode.Overwrite, cancellationToken: Ct));

        Assert.Contains((DiskSize + ChunkSize).ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
        Assert.Contains(DiskSize.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
        Assert.Equal(0, target.Backend is NbdMemoryBackend m ? m.AllocatedBytes : -1);
    }

    [Fact]
    public async Task A_changed_only_restore_writes_exactly_the_chunks_that_differ()
    {
        await using var h = await BackedUpAsync();
        var target = AddTarget(h);
        var uri = h.Server.GetUnixUri("target");
        var reader = await h.OpenAsync(1);
        await Pipeline().ToNbdAsync(reader, uri, RestoreWriteMode.FreshTarget, cancellationToken: Ct);
        // Damage three chunks: two data chunks changed, and data written into a chunk that is zero in the point.
        await target.WriteAsync((1 * ChunkSize) + 7, new byte[] { 1 }, cancellationToken: Ct);
        await target.WriteAsync(21 * ChunkSize, new byte[ChunkSize], cancellationToken: Ct);
        await target.WriteAsync(30 * ChunkSize, new byte[] { 5, 5, 5, 5 }, cancellationToken: Ct);
        var seen = h.Plan.Requests.Count;
        h.Plan.RecordRequests = true;

        var result = await Pipeline().ToNbdAsync(reader, uri, RestoreWriteMode.ChangedOnly, cancellationToken: Ct);

        h.Plan.RecordRequests = false;
        Assert.Equal(await h.ContentAsync(), await ContentAsync(target));
        Assert.Equal(2, result.ChunksWritten);
        Assert.Equal(1, result.ChunksZeroed);
        Assert.Equal(41 - 3, result.ChunksSkipped);
        var requests = h.Plan.Requests.Skip(seen).ToList();
        Assert.Equal([1UL * ChunkSize, 21UL * ChunkSize], requests.Where(r => r.Command == NbdCommand.Write).Select(r => r.Offset).Order());
        Assert.Equal([30UL * ChunkSize], requests.Where(r => r.Command == NbdCommand.WriteZeroes).Select(r => r.Offset));
        // Chunks that are zero in the point and holes on the target are not even read.
        var reads = requests.Where(r => r.Command == NbdCommand.Read).Select(r => r.Offset / ChunkSize).ToHashSet();
        Assert.DoesNotContain(25UL, reads);
        Assert.Contains(30UL, reads);
        Assert.Equal(reads.Count * (long)ChunkSize - (ChunkSize - 8192), result.BytesCompared);
    }

    [Fact]
    public async Task A_missing_chunk_fails_the_restore_naming_the_range_and_leaves_no_file()
    {
        // F33: never silent zeros, and nothing under the final name.
        await using var h = await BackedUpAsync();
        var reader = await h.OpenAsync(1);
        await h.Store.DeleteAsync(ObjectNames.Chunk(reader.IdOf(20)), null, Ct);
        var path = h.Directory.File("vda.raw");

        var error = await Assert.ThrowsAsync<ChunkMissingException>(() => Pipeline().ToFileAsync(reader, path, DiskImageFormat.Raw, cancellationToken: Ct));

        Assert.Equal("vda", error.Disk);
        Assert.Equal(20L * ChunkSize, error.Offset);
        Assert.Equal(ChunkSize, error.Length);
        Assert.Empty(FilesIn(h.Directory.Path));
    }

    [Theory]
    [InlineData(DiskImageFormat.Raw)]
    [InlineData(DiskImageFormat.Qcow2)]
    public async Task Cancelling_a_file_restore_throws_and_leaves_nothing_behind(DiskImageFormat format)
    {
        await using var h = await BackedUpAsync();
        var reader = await h.OpenAsync(1);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var sink = new InlineProgress<TransferProgress>(p =>
        {
            if (p.DoneBytes > 0)
            {
                cancel.Cancel();
            }
        });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            Pipeline(o => { o.ProgressInterval = TimeSpan.Zero; o.Parallelism = 1; }).ToFileAsync(reader, h.Directory.File("vda.img"), format, sink, cancel.Token));

        Assert.Empty(FilesIn(h.Directory.Path));
    }

    [Fact]
    public async Task An_existing_file_is_never_overwritten()
    {
        await using var h = await BackedUpAsync();
        var path = h.Directory.File("vda.raw");
        await File.WriteAllTextAsync(path, "keep me", Ct);
        var reader = await h.OpenAsync(1);

        await Assert.ThrowsAsync<TransferRequestException>(() => Pipeline().ToFileAsync(reader, path, DiskImageFormat.Raw, cancellationToken: Ct));

        Assert.Equal("keep me", await File.ReadAllTextAsync(path, Ct));
    }
}
