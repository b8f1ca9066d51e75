using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>The client against the in-tree server, over real Unix sockets, TCP and in-process streams.</summary>
public sealed class NbdServerRoundTripTests
{
    private const uint Granularity = 64 * 1024;

    public static TheoryData<TestTransport> Transports => [TestTransport.Unix, TestTransport.Tcp, TestTransport.InProcess];

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Written_bytes_read_back_and_unwritten_bytes_read_as_zeroes(TestTransport transport)
    {
        await using var server = TestServer.Start();
        await using var client = await server.ConnectAsync(transport);
        var data = Random(300_000, seed: 1);

        await client.WriteAsync(4096 * 3 + 17, data, cancellationToken: Ct);
        var back = new byte[data.Length + 8192];
        await client.ReadAsync(4096 * 3 + 17 - 4096, back, cancellationToken: Ct);

        Assert.Equal(new byte[4096], back[..4096]);
        Assert.Equal(data, back[4096..(4096 + data.Length)]);
        Assert.Equal(new byte[4096], back[(4096 + data.Length)..]);
        await client.DisconnectAsync(cancellationToken: Ct);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Read_and_write_larger_than_the_maximum_block_size_are_split_and_complete(TestTransport transport)
    {
        await using var server = TestServer.Start();
        server.Server.AddExport(new NbdExport("small-requests", new NbdMemoryBackend(8 * 1024 * 1024), blockSizes: new NbdBlockSizes(512, 4096, 256 * 1024)));
        server.Faults.RecordRequests = true;
        await using var client = await server.ConnectAsync(transport, "small-requests");
        var data = Random(3 * 1024 * 1024, seed: 2);

        await client.WriteAsync(512, data, cancellationToken: Ct);
        var back = new byte[data.Length];
        await client.ReadAsync(512, back, cancellationToken: Ct);

        Assert.True(data.AsSpan().SequenceEqual(back));
        Assert.All(server.Faults.Requests, request => Assert.True(request.Length <= 256 * 1024));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Write_zeroes_trim_flush_and_cache_behave_and_show_in_base_allocation(TestTransport transport)
    {
        await using var server = TestServer.Start(size: 1024 * 1024);
        await using var client = await server.ConnectAsync(transport, options: TestServer.Options(NbdContexts.BaseAllocation));
        await client.WriteAsync(0, Random(1024 * 1024, seed: 3), cancellationToken: Ct);

        await client.WriteZeroesAsync(64 * 1024, 64 * 1024, cancellationToken: Ct);                                 // punches a hole
        await client.WriteZeroesAsync(192 * 1024, 64 * 1024, NbdZeroOptions.NoHole, cancellationToken: Ct);          // stays allocated
        await client.TrimAsync(512 * 1024, 128 * 1024, cancellationToken: Ct);
        await client.WriteZeroesAsync(768 * 1024, 64 * 1024, NbdZeroOptions.Fast | NbdZeroOptions.Fua, cancellationToken: Ct);
        await client.FlushAsync(cancellationToken: Ct);
        await client.CacheAsync(0, 1024 * 1024, cancellationToken: Ct);

        var zeroes = new byte[64 * 1024];
        await client.ReadAsync(64 * 1024, zeroes, cancellationToken: Ct);
        Assert.All(zeroes, b => Assert.Equal(0, b));
        await client.ReadAsync(192 * 1024, zeroes, cancellationToken: Ct);
        Assert.All(zeroes, b => Assert.Equal(0, b));

        var map = (await client.MapAsync(cancellationToken: Ct))[NbdContexts.BaseAllocation];
        Assert.Equal(
            [
                new NbdExtent(0, 64 * 1024, 0),
                new NbdExtent(64 * 1024, 64 * 1024, 3),
                new NbdExtent(128 * 1024, 384 * 1024, 0),
                new NbdExtent(512 * 1024, 128 * 1024, 3),
                new NbdExtent(640 * 1024, 128 * 1024, 0),
                new NbdExtent(768 * 1024, 64 * 1024, 3),
                new NbdExtent(832 * 1024, 192 * 1024, 0),
            ],
            map);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Fast_zero_that_cannot_be_fast_fails_with_ENOTSUP_and_the_connection_stays_usable(TestTransport transport)
    {
        await using var server = TestServer.Start();
        await using var client = await server.ConnectAsync(transport);

        // Keeping the range allocated means writing pages: not faster than a WRITE, so ENOTSUP.
        var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.WriteZeroesAsync(0, 65536, NbdZeroOptions.Fast | NbdZeroOptions.NoHole, cancellationToken: Ct));

        Assert.Equal(NbdErrorCode.NotSupported, error.Error);
        await client.WriteAsync(0, new byte[] { 1, 2, 3 }, cancellationToken: Ct);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Dirty_bitmap_covers_exactly_the_written_ranges_at_its_granularity(TestTransport transport)
    {
        await using var server = TestServer.Start();
        var bitmap = server.Disk.CreateBitmap("backup-1", Granularity);
        var context = NbdContexts.DirtyBitmap("backup-1");
        await using var client = await server.ConnectAsync(transport, options: TestServer.Options(NbdContexts.BaseAllocation, context));
        Assert.True(client.HasContext(context));

        await client.WriteAsync(10, new byte[100], cancellationToken: Ct);                          // granule 0
        await client.WriteAsync((5 * Granularity) - 1, new byte[2], cancellationToken: Ct);         // granules 4 and 5
        await client.WriteZeroesAsync(20 * Granularity, 3 * Granularity, cancellationToken: Ct);    // granules 20..22
        await client.TrimAsync(40 * Granularity, Granularity, cancellationToken: Ct);              // granule 40

        var map = await client.MapAsync([context], cancellationToken: Ct);
        var dirty = map[context].Where(extent => extent.IsDirty).ToList();

        NbdExtent[] expected =
        [
            new(0, Granularity, NbdContexts.DirtyFlag),
            new(4 * Granularity, 2 * Granularity, NbdContexts.DirtyFlag),
            new(20 * Granularity, 3 * Granularity, NbdContexts.DirtyFlag),
            new(40 * Granularity, Granularity, NbdContexts.DirtyFlag),
        ];
        Assert.Equal(expected, dirty);
        Assert.Equal(expected, bitmap.GetDirtyRanges());
        Assert.Equal(TestServer.DefaultSize, map[context].Aggregate(0UL, (sum, extent) => sum + extent.Length));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Map_covers_the_whole_export_for_every_context(TestTransport transport)
    {
        await using var server = TestServer.Start();
        server.Disk.CreateBitmap("a");
        server.Disk.CreateBitmap("b", enabled: false);
        await using var client = await server.ConnectAsync(transport, options: TestServer.Options(NbdContexts.BaseAllocation, "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"));
        await client.WriteAsync(1024 * 1024, Random(3 * 4096, seed: 4), cancellationToken: Ct);

        var map = await client.MapAsync(cancellationToken: Ct);

        Assert.Equal(3, map.Count);
        foreach (var (_, extents) in map)
        {
            Assert.Equal(0UL, extents[0].Offset);
            for (var i = 1; i < extents.Count; i++)
            {
                Assert.Equal(extents[i - 1].End, extents[i].Offset);
            }

            Assert.Equal(TestServer.DefaultSize, extents[^1].End);
        }

        Assert.Equal([new NbdExtent(0, TestServer.DefaultSize, 0)], map["qemu:dirty-bitmap:b"]);
        Assert.Contains(new NbdExtent(1024 * 1024, 64 * 1024, NbdContexts.DirtyFlag), map["qemu:dirty-bitmap:a"]);
        Assert.Contains(new NbdExtent(1024 * 1024, 3 * 4096, 0), map[NbdContexts.BaseAllocation]);
    }

    [Fact]
    public async Task Block_status_with_REQ_ONE_returns_one_extent_within_the_request()
    {
        await using var server = TestServer.Start();
        await using var client = await server.ConnectAsync(options: TestServer.Options(NbdContexts.BaseAllocation));
        await client.WriteAsync(8192, new byte[4096], cancellationToken: Ct);

        var reply = await client.GetBlockStatusAsync(0, 65536, requestOne: true, cancellationToken: Ct);

        Assert.Equal([new NbdExtent(0, 8192, 3)], reply[NbdContexts.BaseAllocation]);
    }

    [Fact]
    public async Task Multi_conn_opens_the_asked_number_of_connections_and_they_share_the_export()
    {
        await using var server = TestServer.Start();
        var options = TestServer.Options();
        options.Connections = 4;
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: options);

        Assert.True(client.Export.CanMultiConn);
        Assert.Equal(4, client.Export.Connections);
        Assert.Equal(4, server.Server.ActiveConnections);

        // Writes spread over the connections; each reads back through whichever connection comes next.
        var writes = Enumerable.Range(0, 32).Select(i => client.WriteAsync((ulong)i * 65536, Random(65536, seed: 100 + i)));
        await Task.WhenAll(writes);
        await client.FlushAsync(cancellationToken: Ct);
        for (var i = 0; i < 32; i++)
        {
            var back = new byte[65536];
            await client.ReadAsync((ulong)i * 65536, back, cancellationToken: Ct);
            Assert.Equal(Random(65536, seed: 100 + i), back);
        }
    }

    [Fact]
    public async Task Many_clients_in_parallel_each_see_their_own_writes()
    {
        await using var server = TestServer.Start();
        var clients = await Task.WhenAll(Enumerable.Range(0, 8).Select(i =>
            server.ConnectAsync(i % 2 == 0 ? TestTransport.Unix : TestTransport.InProcess)));
        try
        {
            await Task.WhenAll(clients.Select(async (client, i) =>
            {
                var data = Random(256 * 1024, seed: 200 + i);
                await client.WriteAsync((ulong)i * 1024 * 1024, data);
                var back = new byte[data.Length];
                await client.ReadAsync((ulong)i * 1024 * 1024, back);
                Assert.Equal(data, back);
            }));
            Assert.Equal(8, server.Server.ActiveConnections);
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Replies_come_out_of_order_when_an_earlier_request_is_slow()
    {
        await using var server = TestServer.Start();
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromMinutes(1), NbdCommand.Read) with { RangeOffset = 0, RangeLength = 4096 });
        var client = await server.ConnectAsync();

        var slow = client.ReadAsync(0, new byte[4096], cancellationToken: Ct);
        await client.ReadAsync(1024 * 1024, new byte[4096], cancellationToken: Ct);
        await client.WriteAsync(0, new byte[4096], cancellationToken: Ct);

        // The later requests were answered while the first still waits; closing the client ends it.
        Assert.False(slow.IsCompleted);
        await client.DisposeAsync();
        await Assert.ThrowsAsync<NbdConnectionException>(() => slow);
    }

    [Fact]
    public async Task Without_structured_replies_reads_use_simple_replies()
    {
        await using var server = TestServer.Start();
        var options = TestServer.Options();
        options.StructuredReplies = false;
        await using var client = await server.ConnectAsync(options: options);
        var data = Random(100_000, seed: 5);

        await client.WriteAsync(12345, data, cancellationToken: Ct);
        var back = new byte[data.Length];
        await client.ReadAsync(12345, back, cancellationToken: Ct);

        Assert.False(client.Export.StructuredReplies);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task Describe_lists_exports_contexts_and_block_sizes()
    {
        await using var server = TestServer.Start();
        server.Server.AddExport(new NbdExport("other", new NbdMemoryBackend(1 << 20), readOnly: true, blockSizes: new NbdBlockSizes(512, 4096, 1 << 20)));
        server.Disk.CreateBitmap("b1");
        server.Disk.CreateBitmap("b2");

        var description = await NbdClient.DescribeAsync(server.Server.GetUnixUri("disk"), TestServer.Options(), cancellationToken: Ct);
        var other = await NbdClient.DescribeAsync(server.Server.GetUnixUri("other"), TestServer.Options(), cancellationToken: Ct);

        Assert.Equal(["disk", "other"], description.Exports);
        Assert.Equal([NbdContexts.BaseAllocation, "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b2"], description.AvailableContexts);
        Assert.Equal("a test disk", description.Export.Description);
        Assert.Equal(TestServer.DefaultSize, description.Export.Size);
        Assert.True(other.Export.IsReadOnly);
        Assert.Equal(new NbdBlockSizes(512, 4096, 1 << 20), other.Export.BlockSizes);
    }

    [Fact]
    public async Task Set_meta_context_ignores_wildcards_unknown_names_and_unknown_namespaces()
    {
        await using var server = TestServer.Start();
        server.Disk.CreateBitmap("b1");

        await using var client = await server.ConnectAsync(options: TestServer.Options(
            "base:", "qemu:", "qemu:dirty-bitmap:", "qemu:dirty-bitmap:nope", "base:nope", "x-other:thing", "qemu:dirty-bitmap:b1"));

        Assert.Equal(["qemu:dirty-bitmap:b1"], client.Export.MetaContexts);
    }

    [Fact]
    public async Task Unknown_export_is_refused_with_NBD_REP_ERR_UNKNOWN()
    {
        await using var server = TestServer.Start();

        var error = await Assert.ThrowsAsync<NbdOptionException>(() => server.ConnectAsync(export: "missing"));

        Assert.Equal(NbdOptionReplyType.ErrUnknown, error.ReplyType);
    }

    [Fact]
    public async Task Stop_closes_listeners_and_connections_and_removes_the_socket()
    {
        await using var server = TestServer.Start();
        var client = await server.ConnectAsync();
        var inProcess = await server.ConnectAsync(TestTransport.InProcess);
        var socket = server.Server.UnixSocketPath!;

        await server.Server.StopAsync(cancellationToken: Ct);

        Assert.Equal(0, server.Server.ActiveConnections);
        Assert.False(File.Exists(socket));
        await Assert.ThrowsAnyAsync<NbdException>(() => client.ReadAsync(0, new byte[512], cancellationToken: Ct));
        await Assert.ThrowsAnyAsync<NbdException>(() => inProcess.ReadAsync(0, new byte[512], cancellationToken: Ct));
        await Assert.ThrowsAsync<NbdConnectionException>(() => server.ConnectAsync());
        await Assert.ThrowsAsync<NbdConnectionException>(() => server.ConnectAsync(TestTransport.InProcess));
        await client.DisposeAsync();
        await inProcess.DisposeAsync();
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Connections_that_end_cleanly_or_abruptly_leave_nothing_behind(TestTransport transport)
    {
        await using var server = TestServer.Start();
        for (var i = 0; i < 3; i++)
        {
            await using var client = await server.ConnectAsync(transport);
            await client.WriteAsync(0, new byte[512], cancellationToken: Ct);
            await client.DisconnectAsync(Ct);
        }

        var abrupt = await server.ConnectAsync(transport);
        _ = abrupt.ReadAsync(0, new byte[512], cancellationToken: Ct);
        await abrupt.DisposeAsync();

        await server.WaitForActiveConnectionsAsync(0);

        Assert.Equal(4, server.Server.TotalConnections);
    }

    internal static byte[] Random(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
