using Drydock.Hypervisor.Virtuozzo.Xml;
using Xunit;

namespace Drydock.Hypervisor.Tests.Virtuozzo;

/// <summary>
/// Round trips of the Virtuozzo X API XML on examples built from its RELAX NG schemas (domainblocksnapshot.rng and the
/// domainblockexport_ grammar of the Virtuozzo libvirt domaincommon.rng) and from how Virtuozzo's own dispatcher writes
/// them (snapshot named by a UUID with image-path disk names; export by snapshot with autoport and allcheckpoints).
/// </summary>
public sealed class VirtuozzoXmlTests
{
    private const string SnapshotExample = """
        <domainblocksnapshot>
          <name>b5f1c1a2-8f7e-4a57-9d53-2f0e6b1e9c11</name>
          <disk name='/vz/vmprivate/vm1/harddisk.hdd'>
            <fleece file='/vz/vmprivate/vm1/harddisk.hdd.fleece'/>
          </disk>
          <disk name='vdb' type='file'>
            <fleece file='/var/lib/fleece/vdb.qcow2'/>
          </disk>
        </domainblocksnapshot>
        """;

    private const string ExportExample = """
        <domainblockexport type='nbd'>
          <address type='ip' host='10.0.0.5' autoport='yes'/>
          <disk name='/vz/vmprivate/vm1/harddisk.hdd' snapshot='b5f1c1a2-8f7e-4a57-9d53-2f0e6b1e9c11' allcheckpoints='yes'/>
          <disk name='vdb' exportname='vm1-vdb' snapshot='b5f1c1a2-8f7e-4a57-9d53-2f0e6b1e9c11' checkpoint='drydock-cp1' readonly='yes'/>
        </domainblockexport>
        """;

    [Fact]
    public void Block_snapshot_example_round_trips()
    {
        var parsed = BlockSnapshotXml.Parse(SnapshotExample);

        Assert.Equal("b5f1c1a2-8f7e-4a57-9d53-2f0e6b1e9c11", parsed.Name);
        Assert.Equal(
            [new VzSnapshotDisk("/vz/vmprivate/vm1/harddisk.hdd", "/vz/vmprivate/vm1/harddisk.hdd.fleece"), new VzSnapshotDisk("vdb", "/var/lib/fleece/vdb.qcow2", "file")],
            parsed.Disks);
        var again = BlockSnapshotXml.Parse(parsed.Format());
        Assert.Equal(parsed.Name, again.Name);
        Assert.Equal(parsed.Disks, again.Disks);
    }

    [Fact]
    public void Block_snapshot_without_a_name_lets_libvirt_choose()
    {
        var xml = new BlockSnapshotXml(null, [new VzSnapshotDisk("vda", "/f/vda.qcow2")]).Format();

        Assert.DoesNotContain("<name>", xml, StringComparison.Ordinal);
        Assert.Null(BlockSnapshotXml.Parse(xml).Name);
    }

    [Theory]
    [InlineData("<domainblocksnapshot><name>x</name></domainblocksnapshot>")]
    [InlineData("<domainblocksnapshot><disk name='vda'/></domainblocksnapshot>")]
    [InlineData("<domainblocksnapshot><name>a</name><name>b</name><disk name='vda'><fleece file='/f'/></disk></domainblocksnapshot>")]
    [InlineData("<domainblockexport/>")]
    public void Invalid_block_snapshots_are_refused(string xml) => Assert.Throws<FormatException>(() => BlockSnapshotXml.Parse(xml));

    [Fact]
    public void Relative_fleece_paths_and_other_disk_types_are_refused_when_writing()
    {
        Assert.Throws<ArgumentException>(() => new BlockSnapshotXml("s", [new VzSnapshotDisk("vda", "fleece.qcow2")]).Format());
        Assert.Throws<ArgumentException>(() => new BlockSnapshotXml("s", [new VzSnapshotDisk("vda", "/f", "block")]).Format());
        Assert.Throws<ArgumentException>(() => new BlockSnapshotXml("s", []).Format());
    }

    [Fact]
    public void Block_export_example_round_trips()
    {
        var parsed = BlockExportXml.Parse(ExportExample);

        Assert.Equal(new VzExportAddress("10.0.0.5", null, true, null), parsed.Address);
        Assert.True(parsed.Disks[0].AllCheckpoints);
        Assert.Null(parsed.Disks[0].Checkpoint);
        Assert.Equal("vm1-vdb", parsed.Disks[1].ExportName);
        Assert.Equal("drydock-cp1", parsed.Disks[1].Checkpoint);
        Assert.True(parsed.Disks[1].ReadOnly);
        var again = BlockExportXml.Parse(parsed.Format());
        Assert.Equal(parsed.Address, again.Address);
        Assert.Equal(parsed.Disks, again.Disks);
    }

    [Fact]
    public void Restore_export_is_a_writable_export_of_the_live_disk()
    {
        var xml = new BlockExportXml(new VzExportAddress("127.0.0.1", 10809, Tls: true), [new VzExportDisk { Name = "vda", ExportName = "r-vda", ReadOnly = false }]).Format();

        Assert.Contains("readonly=\"no\"", xml, StringComparison.Ordinal);
        Assert.Contains("port=\"10809\"", xml, StringComparison.Ordinal);
        Assert.Contains("tls=\"yes\"", xml, StringComparison.Ordinal);
        Assert.DoesNotContain("snapshot=", xml, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("<domainblockexport type='nbd'><address type='ip' host='h'/><disk name='vda' checkpoint='c' allcheckpoints='yes'/></domainblockexport>")]
    [InlineData("<domainblockexport type='iscsi'><address type='ip' host='h'/><disk name='vda'/></domainblockexport>")]
    [InlineData("<domainblockexport type='nbd'><address type='unix' host='h'/><disk name='vda'/></domainblockexport>")]
    [InlineData("<domainblockexport type='nbd'><address type='ip' host='h' port='70000'/><disk name='vda'/></domainblockexport>")]
    [InlineData("<domainblockexport type='nbd'><address type='ip' host='h'/></domainblockexport>")]
    [InlineData("<domainblockexport type='nbd'><disk name='vda'/></domainblockexport>")]
    [InlineData("<domainblockexport type='nbd'><address type='ip' host='h'/><disk name='vda' readonly='maybe'/></domainblockexport>")]
    public void Invalid_block_exports_are_refused(string xml) => Assert.Throws<FormatException>(() => BlockExportXml.Parse(xml));

    [Fact]
    public void Checkpoint_and_allcheckpoints_together_are_refused_when_writing() =>
        Assert.Throws<ArgumentException>(() => new BlockExportXml(new VzExportAddress("h"), [new VzExportDisk { Name = "vda", Checkpoint = "c", AllCheckpoints = true }]).Format());

    [Fact]
    public void Domain_xml_x_elements_are_read_inside_disks_or_under_devices()
    {
        // The shape of x-checkpoint / x-blockexport is inferred (no documentation found): both placements are accepted.
        const string Xml = """
            <domain type='kvm'>
              <name>vm1</name>
              <uuid>11111111-2222-3333-4444-555555555555</uuid>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='/vz/vm1/vda.qcow2'/>
                  <target dev='vda' bus='virtio'/>
                  <x-checkpoint name='drydock-cp1'/>
                  <x-checkpoint name='drydock-cp2'/>
                  <x-blockexport exportname='snap1-vda' snapshot='snap1' checkpoint='drydock-cp1'/>
                </disk>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='/vz/vm1/vdb.qcow2'/>
                  <target dev='vdb' bus='virtio'/>
                </disk>
                <x-checkpoint disk='vdb' name='drydock-cp2'/>
              </devices>
            </domain>
            """;

        var domain = VzDomainXml.Parse(Xml);

        Assert.Equal(["drydock-cp1", "drydock-cp2"], domain.FindDisk("vda")!.Checkpoints);
        Assert.Equal(new VzDiskExport("snap1-vda", "snap1", "drydock-cp1"), Assert.Single(domain.FindDisk("vda")!.Exports));
        Assert.Equal(["drydock-cp2"], domain.FindDisk("vdb")!.Checkpoints);
    }
}
