using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Faults;

/// <summary>
/// FAULTS.md "Bad input an NBD client must reject", handshake part: the in-tree server breaks the handshake
/// as its fault plan says, and the client must refuse with a clear, typed error, in bounded time and memory.
/// The client's ConnectTimeout (5 s) is the hang guard, not something measured.
/// </summary>
public sealed class NbdHandshakeFaultTests
{
    public static TheoryData<TestTransport> Transports => [TestTransport.Unix, TestTransport.InProcess];

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Wrong_greeting_magic_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.WrongGreetingMagic, "NBDMAGIC");

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Server_without_fixed_newstyle_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.NoFixedNewstyle, "fixed newstyle");

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Oldstyle_server_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.Oldstyle, "oldstyle");

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Reply_to_an_option_that_was_not_sent_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.ReplyToUnsentOption, "not sent");

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Repeated_option_reply_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.RepeatedReply, "NBD_OPT_STRUCTURED_REPLY");

    [Theory]
    [MemberData(nameof(Transports))]
    public Task Export_info_whose_length_contradicts_its_type_is_refused(TestTransport transport)
        => AssertRefusedAsync(transport, plan => plan.Handshake = NbdHandshakeFault.ExportInfoWrongLength, "must be 12 bytes");

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Option_reply_over_the_cap_is_refused_before_allocating_it(TestTransport transport)
    {
        await using var server = TestServer.Start();
        server.Faults.Handshake = NbdHandshakeFault.OversizedOptionReply;

        var before = GC.GetTotalAllocatedBytes(precise: true);
        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => server.ConnectAsync(transport));
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        Assert.Contains("over the cap", error.Message, StringComparison.Ordinal);
        Assert.True(allocated < 128 * 1024 * 1024, $"{allocated} bytes allocated for a reply that claims 1 GiB");
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData((1UL << 63) + 4096)]
    [InlineData(ulong.MaxValue)]
    public Task Export_size_zero_or_absurd_is_refused(ulong size)
        => AssertRefusedAsync(TestTransport.InProcess, plan => plan.ExportSize = size, "size");

    [Fact]
    public async Task Export_size_different_from_the_expected_one_is_refused()
    {
        await using var server = TestServer.Start(listen: false);
        var options = TestServer.Options();
        options.ExpectedSize = TestServer.DefaultSize * 2;

        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => server.ConnectAsync(TestTransport.InProcess, options: options));

        Assert.Contains("expected", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(3u, 4096u, 1048576u)]                   // minimum not a power of two
    [InlineData(128u * 1024, 128u * 1024, 1048576u)]    // minimum over 64 KiB
    [InlineData(4096u, 512u, 1048576u)]                 // preferred below the minimum
    [InlineData(512u, 3000u, 1048576u)]                 // preferred not a power of two
    [InlineData(4096u, 4096u, 1000000u)]                // maximum not a multiple of the minimum
    [InlineData(4096u, 4096u, 512u)]                    // maximum below the minimum
    [InlineData(0u, 4096u, 1048576u)]                   // minimum zero
    public Task Block_size_constraints_that_are_invalid_or_inconsistent_are_refused(uint minimum, uint preferred, uint maximum)
        => AssertRefusedAsync(TestTransport.InProcess, plan => plan.BlockSizes = new NbdBlockSizes(minimum, preferred, maximum), "block sizes");

    [Fact]
    public async Task Missing_dirty_bitmap_context_means_no_changed_block_tracking_not_nothing_changed()
    {
        await using var server = TestServer.Start();
        server.Disk.CreateBitmap("cbt");
        server.Faults.Handshake = NbdHandshakeFault.MissingMetaContext;
        var bitmap = NbdContexts.DirtyBitmap("cbt");

        await using var client = await server.ConnectAsync(TestTransport.Unix, options: TestServer.Options(NbdContexts.BaseAllocation, bitmap));

        // The caller sees the bitmap is absent (and must fall back to a full backup); asking for it fails loudly.
        Assert.False(client.HasContext(bitmap));
        Assert.Equal([NbdContexts.BaseAllocation], client.Export.MetaContexts);
        await Assert.ThrowsAsync<InvalidOperationException>(() => client.MapAsync([bitmap], cancellationToken: Ct));
        Assert.Single(await client.MapAsync([NbdContexts.BaseAllocation], cancellationToken: Ct));
    }

    [Fact]
    public async Task Structured_replies_refused_leave_no_block_status_and_reads_on_simple_replies()
    {
        await using var server = TestServer.Start();
        server.Disk.CreateBitmap("cbt");
        server.Faults.Handshake = NbdHandshakeFault.RefuseStructuredReplies;

        await using var client = await server.ConnectAsync(TestTransport.Unix, options: TestServer.Options(NbdContexts.BaseAllocation, NbdContexts.DirtyBitmap("cbt")));

        // No structured replies, so no contexts: an incremental backup cannot run on this connection.
        Assert.False(client.Export.StructuredReplies);
        Assert.Empty(client.Export.MetaContexts);
        await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetBlockStatusAsync(0, 4096, cancellationToken: Ct));
        await client.WriteAsync(0, new byte[] { 7 }, cancellationToken: Ct);
        var back = new byte[1];
        await client.ReadAsync(0, back, cancellationToken: Ct);
        Assert.Equal(7, back[0]);
    }

    private static async Task AssertRefusedAsync(TestTransport transport, Action<NbdFaultPlan> fault, string messagePart)
    {
        await using var server = TestServer.Start(listen: transport != TestTransport.InProcess);
        fault(server.Faults);

        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => server.ConnectAsync(transport));

        Assert.Contains(messagePart, error.Message, StringComparison.OrdinalIgnoreCase);

        // The server is fine with the next client once the fault is gone.
        server.Faults.Handshake = NbdHandshakeFault.None;
        server.Faults.ExportSize = null;
        server.Faults.BlockSizes = null;
        await using var client = await server.ConnectAsync(transport);
        Assert.Equal(TestServer.DefaultSize, client.Export.Size);
    }
}
