fn main() {
    print!("{}", dbward::crds::all_yaml());
}
