using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Faults;

/// <summary>
/// FAULTS.md "Bad input an NBD client must reject", transmission part. Each test keeps a bystander request
/// in flight (the server holds it for a minute) when the fault strikes, so that a protocol violation is seen
/// to fail every request on the connection, and a per-request error to fail only its own. READ buffers are
/// filled with a sentinel and the export with non-zero data: whatever the client wrote is real data, and the
/// bytes the server never sent are never zero-filled. The client's RequestTimeout is a hang guard only.
/// </summary>
public sealed class NbdTransmissionFaultTests
{
    private const int Length = 64 * 1024;
    private const ulong Bystander = 8 * 1024 * 1024;
    private const byte Data = 0x5A;
    private const byte Sentinel = 0xEE;

    public static TheoryData<NbdReplyFault, string, TestTransport> ReadViolations
    {
        get
        {
            var data = new TheoryData<NbdReplyFault, string, TestTransport>();
            (NbdReplyFault Fault, string Why)[] faults =
            [
                (NbdReplyFault.WrongMagic, "magic"),
                (NbdReplyFault.UnknownCookie, "matches no request"),
                (NbdReplyFault.SimpleReplyToStructuredRead, "simple reply"),
                (NbdReplyFault.OversizedChunk, "outside the request"),
                (NbdReplyFault.DataOutsideRequest, "outside the request"),
                (NbdReplyFault.HoleOutsideRequest, "outside the request"),
                (NbdReplyFault.OverlappingContent, "overlaps"),
                (NbdReplyFault.DuplicateContentWithGap, "overlaps"),
                (NbdReplyFault.DoneWithBytesMissing, "bytes missing"),
                (NbdReplyFault.ErrorZeroCode, "error code 0"),
                (NbdReplyFault.ErrorOversizedMessage, "over the cap"),
                (NbdReplyFault.ErrorOffsetOutsideRequest, "outside the request"),
                (NbdReplyFault.UnknownChunkType, "unknown"),
            ];
            foreach (var (fault, why) in faults)
            {
                data.Add(fault, why, TestTransport.Unix);
                data.Add(fault, why, TestTransport.InProcess);
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(ReadViolations))]
    public async Task Read_reply_that_breaks_the_protocol_fails_the_read_and_every_request_in_flight(NbdReplyFault fault, string why, TestTransport transport)
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(transport);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(fault, NbdCommand.Read)));
        var bystander = client.ReadAsync(Bystander, new byte[4096], cancellationToken: Ct);
        var buffer = Sentinels(Length);

        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => client.ReadAsync(0, buffer, cancellationToken: Ct));

        Assert.Contains(why, error.Message, StringComparison.Ordinal);
        AssertNeverZeroFilled(buffer);
        await AssertConnectionDeadAsync<NbdProtocolException>(client, bystander);
    }

    [Fact]
    public async Task Reply_with_an_already_completed_cookie_kills_the_connection()
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(NbdReplyFault.RepeatedReply, NbdCommand.Read)));
        var bystander = client.ReadAsync(Bystander, new byte[4096], cancellationToken: Ct);

        // The first reply completes the read correctly; the second one, for the same cookie, is a violation.
        var buffer = Sentinels(Length);
        await client.ReadAsync(0, buffer, cancellationToken: Ct);

        AssertFilled(buffer, Data);
        await AssertConnectionDeadAsync<NbdProtocolException>(client, bystander);
    }

    [Theory]
    [InlineData(NbdReplyFault.EofInHeader, TestTransport.Unix)]
    [InlineData(NbdReplyFault.EofInHeader, TestTransport.InProcess)]
    [InlineData(NbdReplyFault.EofInPayload, TestTransport.Unix)]
    [InlineData(NbdReplyFault.EofInPayload, TestTransport.InProcess)]
    public async Task End_of_stream_inside_a_reply_fails_the_read_and_every_request_in_flight(NbdReplyFault fault, TestTransport transport)
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(transport);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(fault, NbdCommand.Read)));
        var bystander = client.ReadAsync(Bystander, new byte[4096], cancellationToken: Ct);
        var buffer = Sentinels(Length);

        // A truncated reply is a lost connection (the server may have crashed), reported as such.
        var error = await Assert.ThrowsAsync<NbdConnectionException>(() => client.ReadAsync(0, buffer, cancellationToken: Ct));

        Assert.Contains("middle", error.Message, StringComparison.Ordinal);
        AssertNeverZeroFilled(buffer);
        Assert.Equal(Sentinel, buffer[^1]);
        await AssertConnectionDeadAsync<NbdConnectionException>(client, bystander);
    }

    [Theory]
    [InlineData(NbdReplyFault.NoReply)]
    [InlineData(NbdReplyFault.NoDone)]
    public async Task A_reply_that_never_completes_times_out_and_fails_every_request_in_flight(NbdReplyFault fault)
    {
        await using var server = await StartAsync();
        var options = TestServer.Options();
        options.RequestTimeout = TimeSpan.FromSeconds(1);
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: options);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(fault, NbdCommand.Read)));
        var bystander = client.ReadAsync(Bystander, new byte[4096], cancellationToken: Ct);

        await Assert.ThrowsAsync<NbdTimeoutException>(() => client.ReadAsync(0, Sentinels(Length), cancellationToken: Ct));

        await AssertConnectionDeadAsync<NbdTimeoutException>(client, bystander);
    }

    [Fact]
    public async Task Read_chunk_claiming_four_gigabytes_is_refused_before_allocating()
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(NbdReplyFault.OversizedChunk, NbdCommand.Read)));

        var before = GC.GetTotalAllocatedBytes(precise: true);
        await Assert.ThrowsAsync<NbdProtocolException>(() => client.ReadAsync(0, new byte[4096], cancellationToken: Ct));
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        Assert.True(allocated < 256L * 1024 * 1024, $"{allocated} bytes allocated for a chunk that claims 4 GiB");
    }

    [Fact]
    public async Task Error_chunk_of_an_unknown_type_with_bit_15_fails_only_its_request()
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix);
        server.Faults.Add(OnFirstRange(NbdRequestFault.Reply(NbdReplyFault.UnknownErrorChunkType, NbdCommand.Read)));
        var buffer = Sentinels(Length);

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(0, buffer, cancellationToken: Ct));

        Assert.Equal(NbdErrorCode.IOError, error.Error);
        AssertFilled(buffer, Sentinel);
        await AssertConnectionUsableAsync(client);
    }

    public static TheoryData<NbdReplyFault, bool, string> BlockStatusViolations => new()
    {
        { NbdReplyFault.BlockStatusBadLength, false, "not 4 plus" },
        { NbdReplyFault.BlockStatusTooManyExtents, true, "REQ_ONE" },
        { NbdReplyFault.BlockStatusUnknownContext, false, "never negotiated" },
        { NbdReplyFault.BlockStatusZeroLengthExtent, false, "length zero" },
        { NbdReplyFault.BlockStatusPastExportEnd, false, "export end" },
        { NbdReplyFault.OversizedChunk, false, "over the cap" },
    };

    [Theory]
    [MemberData(nameof(BlockStatusViolations))]
    public async Task Block_status_reply_that_breaks_the_rules_fails_it_and_every_request_in_flight(NbdReplyFault fault, bool requestOne, string why)
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: TestServer.Options(NbdContexts.BaseAllocation));
        server.Faults.Add(NbdRequestFault.Reply(fault, NbdCommand.BlockStatus) with { Count = 1 });
        var bystander = client.ReadAsync(Bystander, new byte[4096], cancellationToken: Ct);

        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => client.GetBlockStatusAsync(TestServer.DefaultSize - Length, Length, requestOne, Ct));

        Assert.Contains(why, error.Message, StringComparison.Ordinal);
        await AssertConnectionDeadAsync<NbdProtocolException>(client, bystander);
    }

    [Fact]
    public async Task Block_status_chunk_claiming_four_gigabytes_is_refused_before_allocating()
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: TestServer.Options(NbdContexts.BaseAllocation));
        server.Faults.Add(NbdRequestFault.Reply(NbdReplyFault.OversizedChunk, NbdCommand.BlockStatus));

        var before = GC.GetTotalAllocatedBytes(precise: true);
        var error = await Assert.ThrowsAsync<NbdProtocolException>(() => client.GetBlockStatusAsync(0, Length, cancellationToken: Ct));
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        Assert.Contains("over the cap", error.Message, StringComparison.Ordinal);
        Assert.True(allocated < 256L * 1024 * 1024, $"{allocated} bytes allocated for a chunk that claims 4 GiB");
    }

    [Theory]
    [InlineData(NbdErrorCode.InvalidArgument, NbdCommand.Read)]
    [InlineData(NbdErrorCode.Overflow, NbdCommand.Read)]
    [InlineData(NbdErrorCode.InvalidArgument, NbdCommand.Write)]
    [InlineData(NbdErrorCode.Overflow, NbdCommand.Write)]
    public async Task Large_requests_refused_with_EINVAL_or_EOVERFLOW_are_retried_smaller_and_succeed(NbdErrorCode error, NbdCommand command)
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(TestTransport.Unix);
        server.Faults.Add(NbdRequestFault.FailLongerThan(64 * 1024, error, command));
        server.Faults.RecordRequests = true;
        var data = Filled(1024 * 1024, 0x33);

        if (command == NbdCommand.Write)
        {
            await client.WriteAsync(0, data, cancellationToken: Ct);
        }
        else
        {
            await server.Disk.WriteAsync(0, data, cancellationToken: Ct);
        }

        var back = Sentinels(data.Length);
        await client.ReadAsync(0, back, cancellationToken: Ct);

        Assert.True(server.Faults.Fired > 0);
        Assert.Contains(server.Faults.Requests, request => request.Command == command && request.Length <= 64 * 1024);
        AssertFilled(back, 0x33);
    }

    [Theory]
    [InlineData(TestTransport.Unix)]
    [InlineData(TestTransport.InProcess)]
    public async Task EIO_on_a_range_fails_the_read_naming_the_offset_and_leaves_the_connection_usable(TestTransport transport)
    {
        await using var server = await StartAsync();
        await using var client = await server.ConnectAsync(transport);
        server.Faults.Add(NbdRequestFault.FailRange(4096 * 3, 4096));
        var buffer = Sentinels(Length);

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(0, buffer, cancellationToken: Ct));

        Assert.Equal(NbdErrorCode.IOError, error.Error);
        Assert.Equal(NbdCommand.Read, error.Command);
        Assert.Equal(4096UL * 3, error.ErrorOffset);
        Assert.Contains("12288", error.Message, StringComparison.Ordinal);

        // The good bytes before the bad range arrived; nothing at or after it was invented.
        AssertFilled(buffer[..(4096 * 3)], Data);
        AssertFilled(buffer[(4096 * 3)..], Sentinel);
        await AssertConnectionUsableAsync(client);
        await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(4096 * 3, new byte[512], cancellationToken: Ct));
    }

    [Fact]
    public async Task EIO_without_structured_replies_still_fails_the_read()
    {
        await using var server = await StartAsync();
        var options = TestServer.Options();
        options.StructuredReplies = false;
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: options);
        server.Faults.Add(NbdRequestFault.FailRange(4096, 4096));

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(0, Sentinels(Length), cancellationToken: Ct));

        Assert.Equal(NbdErrorCode.IOError, error.Error);
        Assert.Null(error.ErrorOffset);
        await AssertConnectionUsableAsync(client);
    }

    [Fact]
    public async Task A_delayed_reply_within_the_timeout_arrives_and_one_beyond_it_times_out()
    {
        await using var server = await StartAsync();
        var options = TestServer.Options();
        options.RequestTimeout = TimeSpan.FromSeconds(2);
        await using var client = await server.ConnectAsync(TestTransport.Unix, options: options);
        server.Faults.Add(OnFirstRange(NbdRequestFault.DelayBy(TimeSpan.FromMilliseconds(100), NbdCommand.Read)));
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromMinutes(1), NbdCommand.Read) with { RangeOffset = Length, RangeLength = Length });

        var buffer = Sentinels(Length);
        await client.ReadAsync(0, buffer, cancellationToken: Ct);
        AssertFilled(buffer, Data);

        await Assert.ThrowsAsync<NbdTimeoutException>(() => client.ReadAsync(Length, new byte[4096], cancellationToken: Ct));
    }

    private static async Task<TestServer> StartAsync()
    {
        var server = TestServer.Start();
        await server.Disk.WriteAsync(0, Filled(2 * Length, Data), cancellationToken: Ct);

        // The bystander: the server holds any request at this offset for a minute (until the connection dies).
        server.Faults.Add(NbdRequestFault.DelayBy(TimeSpan.FromMinutes(1)) with { RangeOffset = Bystander, RangeLength = 4096 });
        return server;
    }

    private static NbdRequestFault OnFirstRange(NbdRequestFault fault) => fault with { RangeOffset = 0, RangeLength = Length, Count = 1 };

    private static async Task AssertConnectionDeadAsync<TException>(NbdClient client, Task bystander)
        where TException : NbdException
    {
        await Assert.ThrowsAsync<TException>(() => bystander);
        var later = await Assert.ThrowsAsync<NbdConnectionException>(() => client.ReadAsync(2 * Length, new byte[512], cancellationToken: Ct));
        Assert.IsType<TException>(later.InnerException);
    }

    private static async Task AssertConnectionUsableAsync(NbdClient client)
    {
        var buffer = Sentinels(4096);
        await client.ReadAsync(Length, buffer, cancellationToken: Ct);
        AssertFilled(buffer, Data);
    }

    private static void AssertNeverZeroFilled(byte[] buffer)
    {
        var odd = buffer.AsSpan().IndexOfAnyExcept(Sentinel, Data);
        Assert.True(odd < 0, $"byte {odd} is neither data nor untouched");
    }

    private static void AssertFilled(byte[] buffer, byte value)
    {
        var odd = buffer.AsSpan().IndexOfAnyExcept(value);
        Assert.True(odd < 0, $"byte {odd} of {buffer.Length} is not 0x{value:x2}");
    }

    private static byte[] Sentinels(int length) => Filled(length, Sentinel);

    private static byte[] Filled(int length, byte value)
    {
        var bytes = new byte[length];
        Array.Fill(bytes, value);
        return bytes;
    }
}
