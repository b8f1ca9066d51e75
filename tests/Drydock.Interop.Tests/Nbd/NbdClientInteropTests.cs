using Xunit;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.TestKit;

namespace Drydock.Interop.Tests.Nbd;

/// <summary>Drydock's NBD client against real servers: writes, zeroes, trims, multi-conn, block sizes, TLS.</summary>
public sealed class NbdClientInteropTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Writes_zeroes_and_trims_through_the_client_read_back_correctly_with_qemu_io()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("client-writes");
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 16 * MiB, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 4 * MiB, 2 * MiB, 0x77, ct);
        var data = TestData.Create(0, (int)(1 * MiB), seed: 42);
        await using (var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ExtraArguments = ["--discard=unmap"] }, ct))
        {
            var options = new NbdClientOptions { Connections = 4 };
            await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(server.Uri), options, ct);
            Assert.False(client.Export.IsReadOnly);
            Assert.Equal(4, client.Export.Connections);

            await client.WriteAsync(0, data, cancellationToken: ct);
            await client.WriteAsync(2 * MiB, Enumerable.Repeat((byte)0x61, (int)(1 * MiB)).ToArray(), cancellationToken: ct);
            await client.WriteZeroesAsync(4 * MiB, 1 * MiB, cancellationToken: ct);
            await client.TrimAsync(5 * MiB, 1 * MiB, cancellationToken: ct);
            await client.FlushAsync(ct);

            var readBack = new byte[1 * MiB];
            await client.ReadAsync(0, readBack, ct);
            Assert.Equal(data, readBack);
            await client.DisconnectAsync(ct);
        }

        // With the server gone, QEMU's own tool reads the image file.
        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, 2 * MiB, 1 * MiB, 0x61, ct));
        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, 4 * MiB, 1 * MiB, 0x00, ct));
        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, 5 * MiB, 1 * MiB, 0x00, ct));
        var raw = directory.File("check.raw");
        await NbdTools.ConvertAsync(image, ImageFormat.Qcow2, raw, ImageFormat.Raw, ct);
        await using var file = File.OpenRead(raw);
        var head = new byte[1 * MiB];
        await file.ReadExactlyAsync(head, ct);
        Assert.Equal(data, head);
    }

    [Fact]
    public async Task Reads_over_many_connections_and_requests_match_the_image_on_nbdkit_memory()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.Memory(64 * MiB), ct);
        var options = new NbdClientOptions { Connections = 3, MaxRequestsInFlight = 8 };
        await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(server.Uri), options, ct);
        Assert.True(client.Export.CanMultiConn);

        // 64 concurrent 512 KiB writes spread over three connections, then read back as one 32 MiB call.
        var writes = Enumerable.Range(0, 64).Select(i =>
            client.WriteAsync((ulong)i * 512 * 1024, TestData.Create(i * 512 * 1024, 512 * 1024, seed: 9), cancellationToken: ct));
        await Task.WhenAll(writes);
        var all = new byte[32 * MiB];
        await client.ReadAsync(0, all, ct);

        Assert.Equal(TestData.Create(0, (int)(32 * MiB), seed: 9), all);
    }

    [Fact]
    public async Task Block_size_constraints_from_nbdkit_are_honoured_and_large_reads_are_split()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = await NbdkitServer.StartAsync(
            NbdkitOptions.Pattern(8 * MiB).WithBlocksizePolicy(minimum: 512, preferred: 4096, maximum: 64 * 1024, errorPolicy: "error"), ct);
        await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(server.Uri), cancellationToken: ct);

        Assert.Equal(512u, client.Export.BlockSizes.Minimum);
        Assert.Equal(64u * 1024, client.Export.BlockSizes.Maximum);

        // A 1 MiB read is split into 64 KiB requests; nbdkit's pattern plugin writes each 8-byte word's offset.
        var buffer = new byte[1 * MiB];
        await client.ReadAsync(2 * MiB, buffer, ct);
        for (var word = 0; word < buffer.Length; word += 8)
        {
            Assert.Equal((ulong)(2 * MiB) + (ulong)word, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(buffer.AsSpan(word)));
        }

        await Assert.ThrowsAsync<ArgumentException>(() => client.ReadAsync(100, new byte[512], ct));
    }

    [Fact]
    public async Task A_read_that_fails_with_EIO_names_the_range_and_the_connection_stays_usable()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("client-eio");
        var trigger = directory.File("fail-now");
        await using var server = await NbdkitServer.StartAsync(
            NbdkitOptions.Pattern(4 * MiB).WithErrorFilter(rate: 1.0, error: "EIO", operation: "pread", triggerFile: trigger), ct);
        await using var client = await NbdClient.ConnectAsync(NbdUri.Parse(server.Uri), cancellationToken: ct);
        var buffer = new byte[64 * 1024];

        await File.WriteAllTextAsync(trigger, "x", ct);
        var error = await Assert.ThrowsAsync<NbdRequestException>(() => client.ReadAsync(MiB, buffer, ct));
        File.Delete(trigger);
        await client.ReadAsync(MiB, buffer, ct);

        Assert.Equal(NbdErrorCode.IOError, error.Error);
        Assert.Equal(NbdCommand.Read, error.Command);
        Assert.Equal((ulong)MiB, error.Offset);
        Assert.Contains("EIO", error.Message, StringComparison.Ordinal);
        Assert.Equal((ulong)MiB, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(buffer));
    }

    [Fact]
    public async Task Tls_with_x509_certificates_works_against_qemu_nbd_and_plaintext_is_refused()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("client-tls");
        using var pki = TestPki.Create(directory.CreateSubdirectory("pki"));
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 8 * MiB, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, 1 * MiB, 0x3c, ct);
        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, TlsCredentialsDirectory = pki.ServerDirectory }, ct);

        await using (var client = await NbdClient.ConnectAsync(NbdUri.Parse(server.TlsUri(pki.ClientDirectory)), cancellationToken: ct))
        {
            Assert.True(client.Export.Tls);
            var buffer = new byte[1 * MiB];
            await client.ReadAsync(0, buffer, ct);
            Assert.All(buffer, b => Assert.Equal(0x3c, b));
        }

        var info = await CliRunner.RunAsync("nbd", "info", "--json", server.TlsUri(pki.ClientDirectory));
        Assert.True(info.ExitCode == 0, info.Error);
        using (var json = info.Json())
        {
            Assert.True(json.RootElement.GetProperty("TLS").GetBoolean());
        }

        var plain = await Assert.ThrowsAsync<NbdTlsException>(() => NbdClient.ConnectAsync(NbdUri.Parse(server.Uri), cancellationToken: ct));
        Assert.Contains("requires TLS", plain.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Tls_refuses_a_server_certificate_that_is_expired_from_an_unknown_CA_or_for_another_name()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("client-tls-bad");
        using var pki = TestPki.Create(directory.CreateSubdirectory("pki"));

        // nbdkit serves whatever certificate it is given (QEMU refuses to start with an expired one).
        foreach (var serverDirectory in new[] { pki.UnknownCaServerDirectory, pki.ExpiredServerDirectory, pki.WrongHostnameServerDirectory })
        {
            await using var server = await NbdkitServer.StartAsync(
                NbdkitOptions.Memory(8 * MiB) with { Transport = ServerTransport.Tcp, Tls = NbdkitTls.Require, TlsCertificatesDirectory = serverDirectory }, ct);
            var uri = NbdUri.Parse(server.TlsUri(pki.ClientDirectory));

            var error = await Assert.ThrowsAsync<NbdTlsException>(() => NbdClient.ConnectAsync(uri, cancellationToken: ct));
            Assert.Contains("TLS handshake", error.Message, StringComparison.Ordinal);
        }
    }
}
