using Drydock.Hypervisor;
using Drydock.Hypervisor.Libvirt;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>Captures against real libvirt 9.0 + QEMU (TCG) domains: point in time, changed blocks, clean-up.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtCaptureTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Lists_the_domain_with_its_disks_sizes_and_identities()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);

        var info = await driver.GetDomainAsync(domain.Uuid, ct);

        Assert.Equal(domain.Name, info.Name);
        Assert.Equal(DomainState.Paused, info.State);
        Assert.Equal(["vda", "vdb"], info.Disks.Select(d => d.Target));
        Assert.Equal([64UL * 1024 * 1024, 32UL * 1024 * 1024], info.Disks.Select(d => d.VirtualSize));
        Assert.All(info.Disks, d => Assert.True(d.SupportsCheckpoints));
        Assert.NotEqual(info.Disks[0].Identity, info.Disks[1].Identity);
        Assert.Contains(await driver.ListDomainsAsync(ct), d => d.Id == domain.Uuid);
        Assert.Equal(info, await driver.GetDomainAsync(domain.Name, ct) with { Disks = info.Disks });
        await Assert.ThrowsAsync<DomainNotFoundException>(() => driver.GetDomainAsync("00000000-0000-0000-0000-000000000001", ct));
    }

    [Fact]
    public async Task Full_capture_reads_the_disk_as_it_was_while_the_guest_keeps_writing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await domain.WriteAsync("vda", 0, 4 * MiB, 0x11, ct);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda", "vdb"], "drydock-full-1"), ct);
        await domain.WriteAsync("vda", 0, 1 * MiB, 0x22, ct);
        await domain.WriteAsync("vda", 3 * MiB, 2 * MiB, 0x33, ct);

        var disk = capture.Disk("vda");
        Assert.True(disk.IsFull);
        Assert.Equal(FullReadCode.NotRequested, disk.FullReason?.Code);
        Assert.Equal(64UL * MiB, disk.VirtualSize);
        Assert.True(disk.InNewCheckpoint);
        await using (var client = await NbdClient.ConnectAsync(disk.Endpoint, cancellationToken: ct))
        {
            Assert.Equal(disk.VirtualSize, client.Export.Size);
            var data = new byte[6 * MiB];
            await client.ReadAsync(0, data, ct);
            Assert.All(data.AsSpan(0, (int)(4 * MiB)).ToArray(), b => Assert.Equal(0x11, b));
            Assert.All(data.AsSpan((int)(4 * MiB)).ToArray(), b => Assert.Equal(0, b));
        }

        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct));
        Assert.False(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-full-1"], ct);
    }

    [Fact]
    public async Task Incremental_covers_exactly_the_written_ranges_and_differential_covers_both_rounds()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        var full = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda", "vdb"], "drydock-cp-1"), ct);
        await driver.ReleaseCaptureAsync(domain.Uuid, full.Id, CaptureOutcome.Committed, ct);

        await domain.WriteAsync("vda", 1 * MiB, 64 * 1024, 0x41, ct);
        await domain.WriteAsync("vda", (10 * MiB) + 4096, 4096, 0x42, ct);
        var incremental = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-cp-1", ["vda", "vdb"], "drydock-cp-2"), ct);
        var vda = incremental.Disk("vda");
        Assert.Equal("qemu:dirty-bitmap:backup-vda", vda.ChangedBlocksContext);
        Assert.Equal(65536, vda.Granularity);
        Assert.Equal([(1 * MiB, 64 * 1024L), (10 * MiB, 64 * 1024L)], await LibvirtTestSupport.DirtyAsync(vda, ct));
        Assert.Empty(await LibvirtTestSupport.DirtyAsync(incremental.Disk("vdb"), ct));
        await driver.ReleaseCaptureAsync(domain.Uuid, incremental.Id, CaptureOutcome.Committed, ct);

        await domain.WriteAsync("vda", 20 * MiB, 128 * 1024, 0x43, ct);
        await domain.WriteAsync("vdb", 0, 4096, 0x44, ct);
        var differential = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-cp-1", ["vda", "vdb"]), ct);
        Assert.Equal([(1 * MiB, 64 * 1024L), (10 * MiB, 64 * 1024L), (20 * MiB, 128 * 1024L)], await LibvirtTestSupport.DirtyAsync(differential.Disk("vda"), ct));
        Assert.Equal([(0L, 64 * 1024L)], await LibvirtTestSupport.DirtyAsync(differential.Disk("vdb"), ct));
        Assert.Null(differential.NewCheckpoint);
        await driver.ReleaseCaptureAsync(domain.Uuid, differential.Id, CaptureOutcome.Committed, ct);

        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-cp-1", "drydock-cp-2"], ct);
    }

    [Fact]
    public async Task Abandoned_capture_removes_its_new_checkpoint_and_a_second_capture_is_busy()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda"], "drydock-abandon-1"), ct);

        // F16: refused at once (libvirt itself would wait 30 s for the job lock), naming the capture that holds it.
        var started = System.Diagnostics.Stopwatch.StartNew();
        var busy = await Assert.ThrowsAsync<DomainBusyException>(() => driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vdb"]), ct));
        Assert.Equal(capture.Id, busy.CaptureId);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(10), $"busy detection took {started.Elapsed}");
        var listed = Assert.Single(await driver.ListCapturesAsync(domain.Uuid, ct));
        Assert.Equal(capture.Id, listed.Id);
        Assert.Equal("drydock-abandon-1", listed.NewCheckpoint);
        Assert.True(listed.StartedByThisDriver);

        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
    }

    // TCP exports on one free loopback port: a second capture would find none while one runs.
    private LibvirtDriverOptions TcpOptions() => new()
    {
        SocketDirectory = fixture.SocketDirectory,
        ScratchDirectory = fixture.ScratchDirectory,
        ExportTransport = LibvirtExportTransport.Tcp,
        TcpHost = "127.0.0.1",
        TcpPortStart = TestKit.Readiness.FreeTcpPort(),
        TcpPortCount = 1,
    };

    [Fact]
    public async Task Tcp_transport_serves_the_capture_on_a_loopback_port()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtDriver.ConnectAsync(TcpOptions(), cancellationToken: ct);
        await domain.WriteAsync("vdb", 0, 1 * MiB, 0x5c, ct);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vdb"]), ct);
        var disk = capture.Disk("vdb");
        Assert.Equal(Drydock.Nbd.NbdTransport.Tcp, disk.Endpoint.Transport);
        Assert.Equal("vdb", disk.ExportName);
        await using (var client = await NbdClient.ConnectAsync(disk.Endpoint, cancellationToken: ct))
        {
            var data = new byte[1 * MiB];
            await client.ReadAsync(0, data, ct);
            Assert.All(data, b => Assert.Equal(0x5c, b));
        }

        // One port configured: a second domain's capture would find none free while this one runs.
        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
    }

    [Fact]
    public async Task Tcp_transport_with_tls_serves_the_capture_only_over_tls_to_clients_with_a_certificate()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        var options = TcpOptions();
        options.TcpTls = true;
        options.TlsClientCertificatesDirectory = fixture.BackupTls.ClientCertificatesDirectory;
        await using var driver = await LibvirtDriver.ConnectAsync(options, cancellationToken: ct);
        await domain.WriteAsync("vdb", 0, 2 * MiB, 0x6d, ct);
        Assert.Empty(await TlsCredentialObjectsAsync(domain, ct));

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vdb"]), ct);
        await domain.WriteAsync("vdb", 1 * MiB, 1 * MiB, 0x6e, ct);
        var disk = capture.Disk("vdb");
        Assert.Equal(NbdTransport.Tcp, disk.Endpoint.Transport);
        Assert.True(disk.Endpoint.TlsRequired);
        Assert.Equal(fixture.BackupTls.ClientCertificatesDirectory, disk.Endpoint.TlsCertificates);
        Assert.StartsWith("nbds://127.0.0.1:", disk.Endpoint.ToString(), StringComparison.Ordinal);
        // libvirt gave QEMU the x509 credentials from backup_tls_x509_cert_dir for this job.
        Assert.Single(await TlsCredentialObjectsAsync(domain, ct));
        await using (var client = await NbdClient.ConnectAsync(disk.Endpoint, cancellationToken: ct))
        {
            Assert.True(client.Export.Tls);
            Assert.Equal(disk.VirtualSize, client.Export.Size);
            var data = new byte[3 * MiB];
            await client.ReadAsync(0, data, ct);
            Assert.All(data.AsSpan(0, (int)(2 * MiB)).ToArray(), b => Assert.Equal(0x6d, b));
            Assert.All(data.AsSpan((int)(2 * MiB)).ToArray(), b => Assert.Equal(0, b));
        }

        // No plaintext fallback: QEMU answers NBD_REP_ERR_TLS_REQD and the client raises it as a TLS error.
        var plain = await Assert.ThrowsAsync<NbdTlsException>(() =>
            NbdClient.ConnectAsync(NbdUri.ForTcp(disk.Endpoint.Host!, disk.Endpoint.Port, disk.ExportName), cancellationToken: ct));
        Assert.Contains("requires TLS", plain.Message, StringComparison.Ordinal);

        // backup_tls_x509_verify defaults to 1: a client that trusts the CA but shows no certificate is refused.
        var anonymous = new NbdClientOptions { Tls = new NbdTlsOptions { TrustedRoots = [fixture.BackupTls.CaCertificate] } };
        await Assert.ThrowsAsync<NbdTlsException>(() => NbdClient.ConnectAsync(disk.Endpoint, anonymous, ct));

        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
        Assert.Empty(await TlsCredentialObjectsAsync(domain, ct));
    }

    /// <summary>The QOM ids of QEMU's <c>tls-creds-x509</c> objects.</summary>
    private static async Task<List<string>> TlsCredentialObjectsAsync(LibvirtTestDomain domain, CancellationToken ct)
    {
        var reply = await domain.QmpAsync("""{"execute":"qom-list","arguments":{"path":"/objects"}}""", ct);
        using var json = System.Text.Json.JsonDocument.Parse(reply);
        return [.. json.RootElement.GetProperty("return").EnumerateArray()
            .Where(p => p.GetProperty("type").GetString() == "child<tls-creds-x509>")
            .Select(p => p.GetProperty("name").GetString()!)];
    }
}
