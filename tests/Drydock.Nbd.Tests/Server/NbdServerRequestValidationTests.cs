using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>
/// Requests a correct client would not send, through the client's own connection type (which sends what it
/// is told): the server answers each with the error the specification names, and the connection stays usable.
/// </summary>
public sealed class NbdServerRequestValidationTests
{
    [Theory]
    [InlineData(NbdCommand.Write, NbdErrorCode.PermissionDenied)]
    [InlineData(NbdCommand.WriteZeroes, NbdErrorCode.PermissionDenied)]
    [InlineData(NbdCommand.Trim, NbdErrorCode.PermissionDenied)]
    public async Task Writes_to_a_read_only_export_fail_with_EPERM(NbdCommand command, NbdErrorCode expected)
    {
        await using var server = TestServer.Start(listen: false);
        server.Server.AddExport(new NbdExport("ro", new NbdMemoryBackend(1 << 20), readOnly: true));
        await using var connection = await OpenAsync(server, "ro");

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => SendAsync(connection, command, NbdCommandFlags.None, 0, 4096));

        Assert.Equal(expected, error.Error);
        await SendAsync(connection, NbdCommand.Read, NbdCommandFlags.None, 0, 4096);
    }

    [Theory]
    [InlineData(NbdCommand.Read, NbdCommandFlags.None, (1UL << 20) - 512, 1024u, NbdErrorCode.InvalidArgument)]
    [InlineData(NbdCommand.Write, NbdCommandFlags.None, 1UL << 20, 512u, NbdErrorCode.NoSpace)]
    [InlineData(NbdCommand.WriteZeroes, NbdCommandFlags.None, ulong.MaxValue - 100, 512u, NbdErrorCode.NoSpace)]
    [InlineData(NbdCommand.Trim, NbdCommandFlags.None, 2UL << 20, 512u, NbdErrorCode.InvalidArgument)]
    [InlineData(NbdCommand.Cache, NbdCommandFlags.None, 2UL << 20, 512u, NbdErrorCode.InvalidArgument)]
    [InlineData(NbdCommand.Read, NbdCommandFlags.None, 100, 512u, NbdErrorCode.InvalidArgument)]                // unaligned
    [InlineData(NbdCommand.Read, NbdCommandFlags.None, 0, 512u * 1024, NbdErrorCode.InvalidArgument)]           // over the maximum
    [InlineData(NbdCommand.WriteZeroes, NbdCommandFlags.None, 0, 512u * 1024, NbdErrorCode.InvalidArgument)]    // over the maximum
    [InlineData(NbdCommand.Read, NbdCommandFlags.DontFragment, 0, 512u, NbdErrorCode.InvalidArgument)]         // DF not offered
    [InlineData(NbdCommand.Write, NbdCommandFlags.RequestOne, 0, 512u, NbdErrorCode.InvalidArgument)]          // flag of another command
    [InlineData(NbdCommand.Flush, (NbdCommandFlags)0x100, 0, 0u, NbdErrorCode.InvalidArgument)]                // unknown flag
    [InlineData(NbdCommand.Resize, NbdCommandFlags.None, 0, 0u, NbdErrorCode.InvalidArgument)]                 // unsupported command
    [InlineData(NbdCommand.BlockStatus, NbdCommandFlags.None, 0, 512u, NbdErrorCode.InvalidArgument)]          // no context negotiated
    public async Task Invalid_requests_get_the_specified_error_and_the_connection_stays_usable(NbdCommand command, NbdCommandFlags flags, ulong offset, uint length, NbdErrorCode expected)
    {
        await using var server = TestServer.Start(listen: false);
        server.Server.AddExport(new NbdExport("strict", new NbdMemoryBackend(1 << 20), blockSizes: new NbdBlockSizes(512, 4096, 256 * 1024)));
        await using var connection = await OpenAsync(server, "strict");

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => SendAsync(connection, command, flags, offset, length));

        Assert.Equal(expected, error.Error);
        Assert.False(string.IsNullOrEmpty(error.ServerMessage));
        await SendAsync(connection, NbdCommand.Write, NbdCommandFlags.None, 0, 512);
    }

    [Fact]
    public async Task A_write_over_the_maximum_block_size_is_read_dropped_and_refused_and_the_stream_stays_in_sync()
    {
        await using var server = TestServer.Start(listen: false);
        server.Server.AddExport(new NbdExport("strict", new NbdMemoryBackend(4 << 20), blockSizes: new NbdBlockSizes(512, 4096, 256 * 1024)));
        await using var connection = await OpenAsync(server, "strict");

        var error = await Assert.ThrowsAsync<NbdRequestException>(() => SendAsync(connection, NbdCommand.Write, NbdCommandFlags.None, 0, 1024 * 1024));

        Assert.Equal(NbdErrorCode.InvalidArgument, error.Error);
        await SendAsync(connection, NbdCommand.Write, NbdCommandFlags.None, 0, 512);
    }

    [Fact]
    public async Task Zero_length_requests_are_answered_without_disconnecting()
    {
        await using var server = TestServer.Start(listen: false);
        await using var connection = await OpenAsync(server, "disk");

        await SendAsync(connection, NbdCommand.Read, NbdCommandFlags.None, 0, 0);
        await SendAsync(connection, NbdCommand.Write, NbdCommandFlags.None, 0, 0);
        await SendAsync(connection, NbdCommand.Trim, NbdCommandFlags.Fua, 0, 0);
        await SendAsync(connection, NbdCommand.Flush, NbdCommandFlags.Fua, 0, 0);
    }

    private static async Task<NbdConnection> OpenAsync(TestServer server, string export)
    {
        var options = TestServer.Options();
        var stream = await server.Server.ConnectInProcessAsync(Ct);
        var negotiation = await Task.Run(() => new NbdNegotiator(stream, export, options, tls: null, defaultHostName: null).Negotiate(), Ct);
        return new NbdConnection(negotiation, options, 0);
    }

    private static Task SendAsync(NbdConnection connection, NbdCommand command, NbdCommandFlags flags, ulong offset, uint length)
    {
        var payload = command == NbdCommand.Write ? new byte[length] : ReadOnlyMemory<byte>.Empty;
        var destination = command == NbdCommand.Read ? new byte[length] : Memory<byte>.Empty;
        return connection.SendAsync(command, flags, offset, length, payload, destination, Ct);
    }
}
