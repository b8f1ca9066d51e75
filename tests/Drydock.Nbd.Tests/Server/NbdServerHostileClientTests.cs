using System.Buffers.Binary;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>Clients that break the protocol are hung up on, before anything is allocated for them, and nobody else notices.</summary>
public sealed class NbdServerHostileClientTests
{
    [Fact]
    public async Task Option_announcing_a_gigabyte_is_hung_up_on_without_allocating_it_and_others_carry_on()
    {
        await using var server = TestServer.Start();
        await using var bystander = await server.ConnectAsync();
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();

        var before = GC.GetTotalAllocatedBytes(precise: true);
        await raw.Stream.WriteAsync(OptionHeader(NbdOption.Go, 1u << 30), Ct);
        Assert.True(await raw.ServerClosedAsync());
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        Assert.True(allocated < 64 * 1024 * 1024, $"{allocated} bytes allocated for a 1 GiB claim");
        await bystander.WriteAsync(0, new byte[] { 1 }, cancellationToken: Ct);
    }

    [Fact]
    public async Task Write_announcing_more_than_the_cap_is_hung_up_on_and_others_carry_on()
    {
        await using var server = TestServer.Start();
        await using var bystander = await server.ConnectAsync();
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();
        await GoAsync(raw, "disk");

        var request = new byte[NbdSizes.RequestHeader];
        NbdTransmissionCodec.WriteRequest(request, new NbdRequestHeader(NbdCommandFlags.None, NbdCommand.Write, 1, 0, uint.MaxValue));
        await raw.Stream.WriteAsync(request, Ct);

        Assert.True(await raw.ServerClosedAsync());
        await bystander.WriteAsync(0, new byte[] { 1 }, cancellationToken: Ct);
        await server.WaitForActiveConnectionsAsync(1); // the hostile connection is gone, the bystander's stays
    }

    [Fact]
    public async Task Wrong_option_magic_is_hung_up_on()
    {
        await using var server = TestServer.Start(listen: false);
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();

        var header = OptionHeader(NbdOption.List, 0);
        header[0] ^= 0xFF;
        await raw.Stream.WriteAsync(header, Ct);

        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task Unknown_client_flags_are_hung_up_on()
    {
        await using var server = TestServer.Start(listen: false);
        await using var raw = await OpenRawAsync(server);

        await raw.StartAsync(NbdClientFlags.FixedNewstyle | (NbdClientFlags)0x80);

        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task Endless_options_are_cut_off()
    {
        await using var server = TestServer.Start(options => options.MaxOptions = 8, listen: false);
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();

        for (var i = 0; i < 8; i++)
        {
            await raw.SendOptionAsync(NbdOption.StructuredReply);
            Assert.Equal(NbdOptionReplyType.Ack, (await raw.ReadReplyAsync()).Header.ReplyType);
        }

        await raw.SendOptionAsync(NbdOption.StructuredReply);
        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task A_client_that_never_finishes_its_handshake_is_closed()
    {
        await using var server = TestServer.Start(options => options.HandshakeTimeout = TimeSpan.FromMilliseconds(200), listen: false);
        await using var raw = await OpenRawAsync(server);

        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task Unknown_and_malformed_options_are_refused_and_negotiation_goes_on()
    {
        await using var server = TestServer.Start(listen: false);
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();

        await raw.SendOptionAsync((NbdOption)4242);
        Assert.Equal(NbdOptionReplyType.ErrUnsupported, (await raw.ReadReplyAsync()).Header.ReplyType);
        await raw.SendOptionAsync(NbdOption.ExtendedHeaders);
        Assert.Equal(NbdOptionReplyType.ErrUnsupported, (await raw.ReadReplyAsync()).Header.ReplyType);
        await raw.SendOptionAsync(NbdOption.Go, new byte[] { 0, 0, 0, 200, 1 });
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await raw.ReadReplyAsync()).Header.ReplyType);
        await raw.SendOptionAsync(NbdOption.SetMetaContext, NbdHandshakeCodec.BuildMetaContextRequest("disk", [NbdContexts.BaseAllocation]));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await raw.ReadReplyAsync()).Header.ReplyType); // structured replies first
        await raw.SendOptionAsync(NbdOption.List, new byte[] { 1 });
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await raw.ReadReplyAsync()).Header.ReplyType);
        await raw.SendOptionAsync(NbdOption.StartTls);
        Assert.Equal(NbdOptionReplyType.ErrPolicy, (await raw.ReadReplyAsync()).Header.ReplyType);  // no certificate
        await raw.SendOptionAsync(NbdOption.Info, NbdHandshakeCodec.BuildExportInfoRequest("nope", []));
        Assert.Equal(NbdOptionReplyType.ErrUnknown, (await raw.ReadReplyAsync()).Header.ReplyType);

        var replies = await GoAsync(raw, "disk");
        Assert.Equal(NbdOptionReplyType.Ack, replies[^1].Header.ReplyType);
    }

    [Fact]
    public async Task Go_answers_export_name_description_and_block_sizes_and_list_names_every_export()
    {
        await using var server = TestServer.Start(listen: false);
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();

        await raw.SendOptionAsync(NbdOption.List);
        var list = await raw.ReadRepliesAsync();
        await raw.SendOptionAsync(NbdOption.Info, NbdHandshakeCodec.BuildExportInfoRequest("disk", [NbdInfoType.Name, NbdInfoType.Description, NbdInfoType.BlockSize]));
        var info = (await raw.ReadRepliesAsync()).Where(r => r.Header.ReplyType == NbdOptionReplyType.Info).Select(r => NbdHandshakeCodec.ParseInfo(r.Payload)).ToList();

        Assert.Equal("disk", NbdHandshakeCodec.ParseServer(list[0].Payload, out var description));
        Assert.Equal("a test disk", description);
        Assert.Contains(info, i => i.Type == NbdInfoType.Export && i.ExportSize == TestServer.DefaultSize && (i.Flags & NbdTransmissionFlags.CanMultiConn) != 0);
        Assert.Contains(info, i => i.Type == NbdInfoType.Name && i.Text == "disk");
        Assert.Contains(info, i => i.Type == NbdInfoType.Description && i.Text == "a test disk");
        Assert.Contains(info, i => i.Type == NbdInfoType.BlockSize && i.BlockSizes == NbdBlockSizes.Default);
    }

    [Fact]
    public async Task List_meta_context_expands_the_wildcards_and_ignores_unknown_namespaces()
    {
        await using var server = TestServer.Start(listen: false);
        server.Disk.CreateBitmap("b1");
        server.Disk.CreateBitmap("b2");
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();
        await raw.SendOptionAsync(NbdOption.StructuredReply);
        await raw.ReadReplyAsync();

        async Task<List<string>> ListAsync(params string[] queries)
        {
            await raw.SendOptionAsync(NbdOption.ListMetaContext, NbdHandshakeCodec.BuildMetaContextRequest("disk", queries));
            return [.. (await raw.ReadRepliesAsync()).Where(r => r.Header.ReplyType == NbdOptionReplyType.MetaContext).Select(r =>
            {
                Assert.Equal(0u, NbdHandshakeCodec.ParseMetaContext(r.Payload, out var name));
                return name;
            })];
        }

        Assert.Equal([NbdContexts.BaseAllocation, "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b2"], await ListAsync());
        Assert.Equal([NbdContexts.BaseAllocation], await ListAsync("base:"));
        Assert.Equal(["qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b2"], await ListAsync("qemu:"));
        Assert.Equal(["qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b2"], await ListAsync("qemu:dirty-bitmap:"));
        Assert.Equal(["qemu:dirty-bitmap:b2"], await ListAsync("qemu:dirty-bitmap:b2", "qemu:dirty-bitmap:none", "x-foo:bar", "base:nothing"));
        await raw.SendOptionAsync(NbdOption.ListMetaContext, NbdHandshakeCodec.BuildMetaContextRequest("disk", ["no-colon"]));
        Assert.Equal(NbdOptionReplyType.ErrInvalid, (await raw.ReadReplyAsync()).Header.ReplyType);
    }

    [Fact]
    public async Task Disconnect_answers_the_requests_in_flight_first()
    {
        await using var server = TestServer.Start(listen: false);
        server.Faults.Add(Nbd.Server.NbdRequestFault.DelayBy(TimeSpan.FromMilliseconds(100)));
        await using var raw = await OpenRawAsync(server);
        await raw.StartAsync();
        await GoAsync(raw, "disk");

        var requests = new byte[2 * NbdSizes.RequestHeader];
        NbdTransmissionCodec.WriteRequest(requests, new NbdRequestHeader(NbdCommandFlags.None, NbdCommand.Flush, 7, 0, 0));
        NbdTransmissionCodec.WriteRequest(requests.AsSpan(NbdSizes.RequestHeader), new NbdRequestHeader(NbdCommandFlags.None, NbdCommand.Disconnect, 8, 0, 0));
        await raw.Stream.WriteAsync(requests, Ct);

        var reply = await raw.ReadAsync(NbdSizes.SimpleReplyHeader);
        Assert.Equal(NbdMagic.SimpleReply, BinaryPrimitives.ReadUInt32BigEndian(reply));
        Assert.Equal(7UL, BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8)));
        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task A_client_vanishing_in_the_middle_of_a_write_payload_only_closes_its_own_connection()
    {
        await using var server = TestServer.Start();
        await using var bystander = await server.ConnectAsync();
        var raw = await OpenRawAsync(server);
        await raw.StartAsync();
        await GoAsync(raw, "disk");

        var request = new byte[NbdSizes.RequestHeader + 100];
        NbdTransmissionCodec.WriteRequest(request, new NbdRequestHeader(NbdCommandFlags.None, NbdCommand.Write, 1, 0, 4096));
        await raw.Stream.WriteAsync(request, Ct);
        await raw.DisposeAsync();

        await bystander.WriteAsync(0, new byte[4096], cancellationToken: Ct);
        var back = new byte[1];
        await bystander.ReadAsync(0, back, cancellationToken: Ct);
        Assert.Equal(0, back[0]);
    }

    private static async Task<RawNbdConnection> OpenRawAsync(TestServer server)
        => new(await server.Server.ConnectInProcessAsync(Ct));

    private static async Task<List<(NbdOptionReplyHeader Header, byte[] Payload)>> GoAsync(RawNbdConnection raw, string export)
    {
        await raw.SendOptionAsync(NbdOption.Go, NbdHandshakeCodec.BuildExportInfoRequest(export, [NbdInfoType.BlockSize]));
        return await raw.ReadRepliesAsync();
    }

    private static byte[] OptionHeader(NbdOption option, uint length)
    {
        var header = new byte[NbdSizes.OptionHeader];
        BinaryPrimitives.WriteUInt64BigEndian(header, NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), length);
        return header;
    }
}
