// 08_memory_allocation.cpp - dynamic memory the modern C++ way.
//
// Shows raw new/delete (and why you rarely want it), std::unique_ptr,
// std::shared_ptr reference counting, and RAII cleanup via destructors.
// Expected verdict: ok
#include <iostream>
#include <memory>
#include <string>
#include <vector>

// A class that announces its construction and destruction.
class Resource
{
public:
    explicit Resource(std::string name) : name_(std::move(name))
    {
        std::cout << "  acquire " << name_ << '\n';
    }
    ~Resource()
    {
        std::cout << "  release " << name_ << '\n';
    }
    const std::string &name() const { return name_; }

private:
    std::string name_;
};

int main()
{
    // Raw new[]/delete[]: works, but you must remember to free it.
    std::cout << "raw array:\n";
    int *raw = new int[5];
    for (int i = 0; i < 5; ++i) {
        raw[i] = i * i;
    }
    std::cout << "  raw[4] = " << raw[4] << '\n';
    delete[] raw;

    // unique_ptr: single owner, freed automatically at end of scope.
    std::cout << "unique_ptr:\n";
    {
        auto owned = std::make_unique<Resource>("unique");
        std::cout << "  using " << owned->name() << '\n';
    }   // released here

    // shared_ptr: reference counted, freed when the last owner goes away.
    std::cout << "shared_ptr:\n";
    {
        auto first = std::make_shared<Resource>("shared");
        std::cout << "  use_count = " << first.use_count() << '\n';
        {
            auto second = first;
            std::cout << "  use_count = " << first.use_count() << '\n';
        }
        std::cout << "  use_count = " << first.use_count() << '\n';
    }   // released here

    // A vector of unique_ptrs owns all its elements.
    std::cout << "vector of unique_ptr:\n";
    {
        std::vector<std::unique_ptr<Resource>> items;
        items.push_back(std::make_unique<Resource>("a"));
        items.push_back(std::make_unique<Resource>("b"));
        std::cout << "  holding " << items.size() << " resources\n";
    }   // both released here

    // A large-ish heap buffer managed by std::vector (8 MiB).
    std::vector<char> buffer(8 * 1024 * 1024, 'x');
    std::cout << "allocated a buffer of " << buffer.size() / (1024 * 1024) << " MiB\n";

    std::cout << "done\n";
    return 0;
}
